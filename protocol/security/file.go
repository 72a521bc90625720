package security

import (
	"cmp"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// Choria's defaults for the two pattern lists.
var (
	defaultCertnameAllowList = []string{`\.mcollective$`, `\.choria$`}
	defaultPrivilegedUsers   = []string{`\.privileged.mcollective$`, `\.privileged.choria$`}
)

// DefaultCacheSize is how many verified certificates a FileVerifier
// remembers when FileConfig.CacheSize is zero.
const DefaultCacheSize = 1024

// FileConfig holds the settings of Choria's file security provider that
// matter for verifying requests.
type FileConfig struct {
	// CAFile is the PEM bundle every caller certificate must chain to
	// (plugin.security.file.ca). Required.
	CAFile string
	// CertnameAllowList holds regular expressions (optionally written as
	// /re/) the certname of a caller that is not privileged must match
	// (plugin.choria.security.certname_whitelist). Nil means Choria's
	// default `\.mcollective$`, `\.choria$`; an empty list allows nobody.
	CertnameAllowList []string
	// PrivilegedUsers holds regular expressions matched against the
	// certificate's common name and DNS names; a match makes the caller
	// privileged (plugin.choria.security.privileged_users). Nil means
	// Choria's default `\.privileged.mcollective$`, `\.privileged.choria$`;
	// an empty list makes nobody privileged.
	PrivilegedUsers []string
	// SupportLegacyCertificates lets a certificate without any subject
	// alternative name match the certname by its common name
	// (plugin.security.support_legacy_certificates). Off by default, so a
	// caller's certname must be one of its DNS names.
	SupportLegacyCertificates bool
	// CacheSize is how many successful certificate verifications are
	// remembered, so a returning caller costs one signature check. Zero
	// means DefaultCacheSize; a negative value disables the cache.
	CacheSize int

	// caSetting names where CAFile came from in errors; the file
	// provider's key when empty.
	caSetting string
}

// Option changes how a FileVerifier works.
type Option func(*FileVerifier)

// WithClock sets the clock used for certificate validity; default time.Now.
func WithClock(now func() time.Time) Option {
	return func(v *FileVerifier) { v.now = now }
}

// FileVerifier verifies requests signed with x509 certificates from one CA,
// as Choria's file security provider does. It is safe for concurrent use.
//
// As in Choria, a privileged caller (a certificate whose common name or a
// DNS name matches PrivilegedUsers) needs only a valid chain: it may present
// any caller id and the certname allow-list does not apply to it, because
// acting for other callers (an AAA signer, for example) is its purpose.
type FileVerifier struct {
	roots      *x509.CertPool
	allow      []*regexp.Regexp
	privileged []*regexp.Regexp
	legacy     bool
	cache      *certCache
	now        func() time.Time
}

// NewFileVerifier loads the CA bundle and compiles the patterns once.
func NewFileVerifier(cfg FileConfig, opts ...Option) (*FileVerifier, error) {
	v := &FileVerifier{legacy: cfg.SupportLegacyCertificates, now: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt(v)
		}
	}
	var err error
	if v.roots, err = loadCA(cfg.CAFile); err != nil {
		setting := cmp.Or(cfg.caSetting, "plugin.security.file.ca")
		return nil, fmt.Errorf("%s: %w", setting, err)
	}
	if v.allow, err = compilePatterns(cfg.CertnameAllowList, defaultCertnameAllowList); err != nil {
		return nil, fmt.Errorf("plugin.choria.security.certname_whitelist: %w", err)
	}
	if v.privileged, err = compilePatterns(cfg.PrivilegedUsers, defaultPrivilegedUsers); err != nil {
		return nil, fmt.Errorf("plugin.choria.security.privileged_users: %w", err)
	}
	switch {
	case cfg.CacheSize == 0:
		v.cache = newCertCache(DefaultCacheSize)
	case cfg.CacheSize > 0:
		v.cache = newCertCache(cfg.CacheSize)
	}
	return v, nil
}

// Verify checks that the request was signed by a caller the CA vouches for
// and that the caller may use the caller id it claims. The checks, in
// order: no "insecure" markers; a well formed caller id and signature; the
// certificate chains to the CA for client authentication; unless
// privileged, the certificate is valid for the certname and the certname
// is allowed; finally the RSA PKCS#1 v1.5 SHA-256 signature over the exact
// bytes of sr.Message. Successful certificate checks are cached until the
// chain's first expiry.
func (v *FileVerifier) Verify(sr *v1.SecureRequest, req *v1.Request) error {
	if sr.Signature == v1.InsecureMarker || sr.PubCert == v1.InsecureMarker {
		return fmt.Errorf("%w: it carries the %q markers of a client built without request signing", ErrInsecureRequest, v1.InsecureMarker)
	}
	callerID := req.Envelope.CallerID
	certname, whole, err := parseCallerID(callerID)
	if err != nil {
		return err
	}
	sig, err := base64.StdEncoding.DecodeString(sr.Signature)
	if err != nil {
		return fmt.Errorf("%w: signature from %s is not base64: %v", ErrSignature, certname, err)
	}

	now := v.now()
	key := cacheKey{cert: sha256.Sum256([]byte(sr.PubCert)), certname: certname}
	ent := v.cache.get(key, now)
	if ent == nil {
		if ent, err = v.checkCertificate(sr.PubCert, certname, now); err != nil {
			return err
		}
		v.cache.put(key, ent)
	}
	// Choria ignores text after the certname; a caller that is not
	// privileged may only claim exactly its own identity, because
	// authorization policies match on the whole caller id.
	if !ent.privileged && !whole {
		return fmt.Errorf("%w: %q has text after the certname %s", ErrCallerID, callerID, certname)
	}
	return checkSignature(ent.pub, sr.Message, sig, certname)
}

// checkCertificate does the expensive part of Verify: parsing the
// certificate and verifying its chain, names and allow-list.
func (v *FileVerifier) checkCertificate(pubcert, certname string, now time.Time) (*certEntry, error) {
	leaf, intermediates, err := parsePubCert(pubcert)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", certname, err)
	}
	pub, err := rsaKey(leaf)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", certname, err)
	}
	privileged := v.isPrivileged(leaf)
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		// What Choria asks for: a certificate usable by a client.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: certificate %q presented for %s does not verify against the CA: %v", ErrCertificate, leaf.Subject.CommonName, certname, err)
	}
	if !privileged {
		if !v.validFor(leaf, certname) {
			return nil, fmt.Errorf("%w: certificate %q (DNS names %v) is not valid for certname %s and is not privileged", ErrCallerMismatch, leaf.Subject.CommonName, leaf.DNSNames, certname)
		}
		if !matchAny(v.allow, certname) {
			return nil, fmt.Errorf("%w: %s does not match plugin.choria.security.certname_whitelist", ErrNotAllowed, certname)
		}
	}
	ent := &certEntry{pub: pub, privileged: privileged}
	// The first chain's window is conservative: leaving it early only
	// costs a fresh verification.
	for i, c := range chains[0] {
		if i == 0 || c.NotBefore.After(ent.notBefore) {
			ent.notBefore = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(ent.notAfter) {
			ent.notAfter = c.NotAfter
		}
	}
	return ent, nil
}

// isPrivileged matches the common name and every DNS name, as Choria does.
func (v *FileVerifier) isPrivileged(cert *x509.Certificate) bool {
	if matchAny(v.privileged, cert.Subject.CommonName) {
		return true
	}
	return slices.ContainsFunc(cert.DNSNames, func(n string) bool { return matchAny(v.privileged, n) })
}

// validFor compares names exactly, as Choria does (no wildcards, no case
// folding). The common name counts only for legacy certificates without
// any subject alternative name, and only when that support is enabled.
func (v *FileVerifier) validFor(cert *x509.Certificate, certname string) bool {
	if slices.Contains(cert.DNSNames, certname) {
		return true
	}
	return v.legacy && !hasSANs(cert) && cert.Subject.CommonName == certname
}

var oidSubjectAltName = []int{2, 5, 29, 17}

func hasSANs(cert *x509.Certificate) bool {
	return slices.ContainsFunc(cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) })
}

// maxPubCerts bounds the certificates a caller's pubcert may hold (its
// own and intermediates); each costs a parse before the signature is known
// to be good.
const maxPubCerts = 8

// parsePubCert decodes the caller's PEM: the first certificate is the
// caller's, any further ones are untrusted intermediates, as in Choria.
// Other PEM blocks are ignored.
func parsePubCert(pubcert string) (*x509.Certificate, *x509.CertPool, error) {
	certs, err := parseCerts([]byte(pubcert), maxPubCerts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	if len(certs) == 0 {
		if strings.Contains(pubcert, "-----BEGIN") {
			return nil, nil, fmt.Errorf("%w: the pubcert PEM holds no CERTIFICATE block", ErrCertificate)
		}
		return nil, nil, fmt.Errorf("%w: the pubcert is not PEM", ErrInsecureRequest)
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	return certs[0], intermediates, nil
}

// parseCerts parses the CERTIFICATE blocks of a PEM text, at most max.
func parseCerts(b []byte, max int) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return certs, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if len(certs) == max {
			return nil, fmt.Errorf("more than %d certificates", max)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
}

// rsaKey returns the certificate's key; Choria signs requests only with RSA.
func rsaKey(cert *x509.Certificate) (*rsa.PublicKey, error) {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: the certificate's key is %s, but Choria requests are signed only with RSA keys", ErrSignature, cert.PublicKeyAlgorithm)
	}
	return pub, nil
}

// checkSignature verifies an RSA PKCS#1 v1.5 signature over SHA-256 of the
// exact message text.
func checkSignature(pub *rsa.PublicKey, message string, sig []byte, certname string) error {
	digest := sha256.Sum256([]byte(message))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		return fmt.Errorf("%w: the request from %s was not signed by its certificate's key", ErrSignature, certname)
	}
	return nil
}

// loadCA reads every certificate of a PEM bundle into a pool.
func loadCA(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, fmt.Errorf("%w: no CA file set", ErrConfig)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: reading CA: %v", ErrConfig, err)
	}
	certs, err := parseCerts(b, 1<<16)
	if err != nil {
		return nil, fmt.Errorf("%w: CA %s: %v", ErrConfig, file, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: CA %s holds no PEM certificate", ErrConfig, file)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// compilePatterns compiles Choria-style patterns; like Choria, a pattern
// written as /re/ loses its slashes.
func compilePatterns(patterns, defaults []string) ([]*regexp.Regexp, error) {
	if patterns == nil {
		patterns = defaults
	}
	out := make([]*regexp.Regexp, 0, len(patterns))
	for _, p := range patterns {
		if len(p) > 2 && strings.HasPrefix(p, "/") && strings.HasSuffix(p, "/") {
			p = strings.Trim(p, "/")
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("%w: pattern %q: %v", ErrConfig, p, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func matchAny(res []*regexp.Regexp, s string) bool {
	return slices.ContainsFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
}

// Interface guards
var _ Verifier = (*FileVerifier)(nil)
