// Package security verifies incoming Choria v1 requests the way Choria's
// x509 "file" security provider does (and its "puppet" provider, which is
// the same over the files of Puppet's SSL directory), and loads the key
// material a client or the host's broker connection needs.
//
// A v1 request is trusted when its embedded certificate chains to the
// configured CA, names the caller (or is privileged), is on the certname
// allow-list, and its RSA signature covers the exact request text. The
// request's age is checked separately by CheckTTL, as Choria does after
// filtering. The package is pure: no I/O after construction, no logging.
package security

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// Sentinel errors; every verification failure wraps exactly one of them
// with the detail (which certname, which check).
var (
	// ErrConfig reports unusable verifier settings; the message names the config key.
	ErrConfig = errors.New("security: invalid configuration")
	// ErrInsecureRequest reports a request without usable signing material:
	// the "insecure" markers of a client built without signing, or a
	// pubcert that is not PEM.
	ErrInsecureRequest = errors.New("security: request is not signed")
	// ErrCallerID reports a caller id that is not of the form name=certname.
	ErrCallerID = errors.New("security: invalid caller id")
	// ErrCertificate reports a caller certificate that does not parse or
	// does not chain to the CA (another CA, expired, wrong key usage).
	ErrCertificate = errors.New("security: caller certificate not trusted")
	// ErrCallerMismatch reports a certificate that is not valid for the
	// caller id's certname, from a caller that is not privileged.
	ErrCallerMismatch = errors.New("security: certificate does not match caller id")
	// ErrNotAllowed reports a certname outside the certname allow-list.
	ErrNotAllowed = errors.New("security: certname not allowed")
	// ErrSignature reports a signature that is not base64, was not made by
	// the certificate's key, or a certificate whose key is not RSA.
	ErrSignature = errors.New("security: invalid request signature")
	// ErrExpired reports a request outside its TTL window.
	ErrExpired = errors.New("security: request expired")
	// ErrKey reports a private key that cannot sign Choria requests.
	ErrKey = errors.New("security: unusable private key")
)

// Verifier decides whether a decoded request may be trusted. req must be
// the result of sr.Request(): the caller id is taken from req while the
// signature covers sr.Message.
type Verifier interface {
	Verify(sr *v1.SecureRequest, req *v1.Request) error
}

// Insecure accepts every request. It exists only for the explicitly named
// development mode (plugin.security.provider = insecure); anyone who can
// publish to the broker can then run agents.
type Insecure struct{}

// Verify always returns nil.
func (Insecure) Verify(*v1.SecureRequest, *v1.Request) error { return nil }

// callerIDRe is Choria's caller id pattern. It is anchored only at the
// start, so text after the certname is ignored; Verify refuses such
// trailing text from callers that are not privileged.
var callerIDRe = regexp.MustCompile(`^[a-z]+=([\w\.\-]+)`)

// CallerCertname extracts the certname from a caller id the way Choria
// does: `choria=rip.mcollective` gives `rip.mcollective`.
func CallerCertname(callerID string) (string, error) {
	name, _, err := parseCallerID(callerID)
	return name, err
}

// parseCallerID also reports whether the pattern consumed the whole id.
func parseCallerID(callerID string) (name string, whole bool, err error) {
	m := callerIDRe.FindStringSubmatchIndex(callerID)
	if m == nil {
		return "", false, fmt.Errorf("%w: %q is not of the form name=certname", ErrCallerID, callerID)
	}
	return callerID[m[2]:m[3]], m[1] == len(callerID), nil
}

// maxTTL keeps the TTL window representable as a time.Duration.
const maxTTL = math.MaxInt64 / int64(time.Second)

// CheckTTL applies Choria's TTL window: a request is current iff
// now-ttl < time < now+ttl, both bounds exclusive, compared with now's
// full precision against the whole-second request time.
func CheckTTL(env *v1.RequestEnvelope, now time.Time) error {
	sent := time.Unix(env.Time, 0)
	ttl := time.Duration(min(int64(env.TTL), maxTTL)) * time.Second
	if env.TTL <= 0 || !sent.After(now.Add(-ttl)) {
		return fmt.Errorf("%w: sent at %s with a ttl of %ds, now %s", ErrExpired, sent.UTC().Format(time.RFC3339), env.TTL, now.UTC().Format(time.RFC3339))
	}
	if !sent.Before(now.Add(ttl)) {
		return fmt.Errorf("%w: sent at %s, more than its ttl of %ds after now (%s); check the clocks", ErrExpired, sent.UTC().Format(time.RFC3339), env.TTL, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// Interface guards
var _ Verifier = Insecure{}
