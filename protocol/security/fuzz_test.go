package security

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/hosttest"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// FuzzVerify feeds mutated secure requests to a verifier. No input may be
// accepted (the seeds are either signed by a CA the verifier does not
// trust or tampered with), nothing may panic, and every refusal must wrap
// one of the package's sentinels.
func FuzzVerify(f *testing.F) {
	for _, c := range loadCaptured(f) {
		f.Add(c.sr.Message, c.sr.Signature, c.sr.PubCert)
	}
	pki := hosttest.NewPKI(f)
	rip := issue(f, pki, "rip.mcollective")
	now := time.Now()
	sr, _ := signed(f, rip, "choria=rip.mcollective", now, nil)
	f.Add(strings.Replace(sr.Message, `"ttl":60`, `"ttl":61`, 1), sr.Signature, sr.PubCert)
	sr, _ = signed(f, rip, "choria=bob.mcollective", now, nil)
	f.Add(sr.Message, sr.Signature, sr.PubCert)
	v := newVerifier(f, FileConfig{CAFile: pki.CAFile}, WithClock(func() time.Time { return now }))

	f.Fuzz(func(t *testing.T, message, signature, pubcert string) {
		sr := &v1.SecureRequest{Protocol: v1.SecureRequestProtocol, Message: message, Signature: signature, PubCert: pubcert}
		req, err := sr.Request()
		if err != nil {
			return // not a request: the decoder's concern, not the verifier's
		}
		err = v.Verify(sr, req)
		if err == nil {
			t.Fatalf("accepted a request from %q", req.Envelope.CallerID)
		}
		if !wrapsSentinel(err) {
			t.Fatalf("error %v wraps no sentinel", err)
		}
	})
}

var certnameRe = regexp.MustCompile(`^[\w.\-]+$`)

// FuzzCallerCertname checks that a certname, when found, is a non-empty
// run of certname characters right after the id's name= prefix.
func FuzzCallerCertname(f *testing.F) {
	for _, c := range loadCaptured(f) {
		f.Add(c.req.Envelope.CallerID)
	}
	for _, s := range []string{"up=bob", "choria=", "=x", "choria=a/b", "Choria=x", "choria=x\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, callerID string) {
		name, err := CallerCertname(callerID)
		if err != nil {
			if !errors.Is(err, ErrCallerID) || name != "" {
				t.Fatalf("CallerCertname(%q) = %q, %v", callerID, name, err)
			}
			return
		}
		prefix, rest, ok := strings.Cut(callerID, "=")
		if !ok || prefix == "" || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyz") != "" {
			t.Fatalf("CallerCertname(%q) accepted a bad prefix", callerID)
		}
		if !certnameRe.MatchString(name) || !strings.HasPrefix(rest, name) {
			t.Fatalf("CallerCertname(%q) = %q", callerID, name)
		}
		if len(rest) > len(name) && certnameRe.MatchString(rest[len(name):len(name)+1]) {
			t.Fatalf("CallerCertname(%q) = %q stopped early", callerID, name)
		}
	})
}

func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// BenchmarkVerify compares a caller seen for the first time (certificate
// parsed and chain verified) with a returning one (signature check only).
func BenchmarkVerify(b *testing.B) {
	pki := hosttest.NewPKI(b)
	rip := issue(b, pki, "rip.mcollective")
	sr, req := signed(b, rip, "choria=rip.mcollective", time.Now(), nil)
	for _, bc := range []struct {
		name string
		size int
	}{{"cold", -1}, {"cached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			v := newVerifier(b, FileConfig{CAFile: pki.CAFile, CacheSize: bc.size})
			b.ReportAllocs()
			for b.Loop() {
				if err := v.Verify(sr, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
