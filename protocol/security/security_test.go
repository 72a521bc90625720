package security

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-host/agent-host/host/hosttest"
	v1 "github.com/agent-host/agent-host/protocol/v1"
)

// sentinels is every error Verify may wrap.
var sentinels = []error{ErrInsecureRequest, ErrCallerID, ErrCertificate, ErrCallerMismatch, ErrNotAllowed, ErrSignature}

// identity is an issued certificate with its signer.
type identity struct {
	signer  crypto.Signer
	certPEM []byte
}

func issue(t testing.TB, pki *hosttest.PKI, name string, opts ...hosttest.CertOption) identity {
	t.Helper()
	certFile, keyFile := pki.Issue(t, name, opts...)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("loading %s: %v", name, err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	return identity{signer: pair.PrivateKey.(crypto.Signer), certPEM: certPEM}
}

// signed builds a request from callerID as a Choria client does, lets
// mutate change the secure request, and decodes it again as the host does.
func signed(t testing.TB, id identity, callerID string, now time.Time, mutate func(*v1.SecureRequest)) (*v1.SecureRequest, *v1.Request) {
	t.Helper()
	reqID, err := v1.NewRequestID()
	if err != nil {
		t.Fatal(err)
	}
	certname, _, _ := strings.Cut(strings.TrimPrefix(callerID, "choria="), "/")
	req := v1.NewRequest(v1.RequestEnvelope{
		RequestID: reqID, SenderID: certname, CallerID: callerID, Collective: "mcollective",
		Agent: "rpcutil", TTL: 60, Time: now.Unix(),
	}, []byte(`{"agent":"rpcutil","action":"ping","data":{}}`))
	sr, err := req.Seal(id.signer, id.certPEM)
	if err != nil {
		t.Fatalf("sealing: %v", err)
	}
	if mutate != nil {
		mutate(sr)
	}
	decoded, err := sr.Request()
	if err != nil {
		t.Fatalf("decoding the request again: %v", err)
	}
	return sr, decoded
}

func newVerifier(t testing.TB, cfg FileConfig, opts ...Option) *FileVerifier {
	t.Helper()
	v, err := NewFileVerifier(cfg, opts...)
	if err != nil {
		t.Fatalf("NewFileVerifier: %v", err)
	}
	return v
}

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("error = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Fatalf("error %v wraps both %v and %v", err, want, s)
		}
	}
}

func TestVerify(t *testing.T) {
	pki := hosttest.NewPKI(t)
	other := hosttest.NewPKI(t)
	inter := pki.Intermediate(t, "agent-host test intermediate")
	now := time.Now()

	rip := issue(t, pki, "rip.mcollective")
	ripPKCS8 := issue(t, pki, "rip.mcollective", hosttest.WithPKCS8())
	bob := issue(t, pki, "bob.mcollective")
	foreign := issue(t, other, "rip.mcollective")
	outside := issue(t, pki, "rip.example.net")
	priv := issue(t, pki, "admin.privileged.mcollective")
	privSAN := issue(t, pki, "aaa-signer", hosttest.WithDNSNames("aaa.privileged.choria"))
	privCN := issue(t, pki, "svc.example.net", hosttest.WithCommonName("ops.privileged.choria"))
	privForeign := issue(t, other, "admin.privileged.mcollective")
	notPriv := issue(t, pki, "admin.privileged.example.net")
	expired := issue(t, pki, "rip.mcollective", hosttest.Expired())
	future := issue(t, pki, "rip.mcollective", hosttest.NotYetValid())
	ecdsa := issue(t, pki, "rip.mcollective", hosttest.WithECDSA())
	serverOnly := issue(t, pki, "rip.mcollective", hosttest.WithExtKeyUsages(x509.ExtKeyUsageServerAuth))
	legacy := issue(t, pki, "rip.mcollective", hosttest.WithoutSANs())
	cnOnly := issue(t, pki, "other.mcollective", hosttest.WithCommonName("rip.mcollective"))
	wildcard := issue(t, pki, "wild.mcollective", hosttest.WithDNSNames("*.mcollective"))
	chained := issue(t, inter, "rip.mcollective")

	def := newVerifier(t, FileConfig{CAFile: pki.CAFile})
	set := func(f func(*v1.SecureRequest)) func(*v1.SecureRequest) { return f }

	tests := []struct {
		name     string
		id       identity
		callerID string
		mutate   func(*v1.SecureRequest)
		cfg      *FileConfig // nil: the default verifier
		wantErr  error
	}{
		{name: "valid request", id: rip, callerID: "choria=rip.mcollective"},
		{name: "valid request, PKCS#8 key", id: ripPKCS8, callerID: "choria=rip.mcollective"},
		{name: "valid request through an intermediate in the pubcert", id: chained, callerID: "choria=rip.mcollective"},
		{name: "pubcert with too many certificates", id: rip, callerID: "choria=rip.mcollective", mutate: set(func(sr *v1.SecureRequest) {
			sr.PubCert = strings.Repeat(sr.PubCert, maxPubCerts+1)
		}), wantErr: ErrCertificate},
		{name: "pubcert with as many certificates as allowed", id: rip, callerID: "choria=rip.mcollective", mutate: set(func(sr *v1.SecureRequest) {
			sr.PubCert = strings.Repeat(sr.PubCert, maxPubCerts)
		})},
		{name: "other caller id prefix", id: rip, callerID: "up=rip.mcollective"},
		{
			name: "tampered message", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrSignature,
			mutate: set(func(sr *v1.SecureRequest) { sr.Message = strings.Replace(sr.Message, `"ttl":60`, `"ttl":61`, 1) }),
		},
		{
			name: "message with one byte of whitespace added", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrSignature,
			mutate: set(func(sr *v1.SecureRequest) { sr.Message += " " }),
		},
		{
			name: "signed by another key", id: bob, callerID: "choria=rip.mcollective", wantErr: ErrSignature,
			mutate: set(func(sr *v1.SecureRequest) { sr.PubCert = string(rip.certPEM) }),
		},
		{
			name: "signature not base64", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrSignature,
			mutate: set(func(sr *v1.SecureRequest) { sr.Signature = "not base64!" }),
		},
		{
			name: "empty signature", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrSignature,
			mutate: set(func(sr *v1.SecureRequest) { sr.Signature = "" }),
		},
		{name: "certificate from another CA", id: foreign, callerID: "choria=rip.mcollective", wantErr: ErrCertificate},
		{
			name: "intermediate missing from the pubcert", id: chained, callerID: "choria=rip.mcollective", wantErr: ErrCertificate,
			mutate: set(func(sr *v1.SecureRequest) {
				sr.PubCert = sr.PubCert[:strings.Index(sr.PubCert, "-----END")+len("-----END CERTIFICATE-----\n")]
			}),
		},
		{name: "expired certificate", id: expired, callerID: "choria=rip.mcollective", wantErr: ErrCertificate},
		{name: "certificate not yet valid", id: future, callerID: "choria=rip.mcollective", wantErr: ErrCertificate},
		{name: "certificate without client auth usage", id: serverOnly, callerID: "choria=rip.mcollective", wantErr: ErrCertificate},
		{name: "certificate for another certname", id: rip, callerID: "choria=bob.mcollective", wantErr: ErrCallerMismatch},
		{name: "certname differs only in case", id: rip, callerID: "choria=RIP.mcollective", wantErr: ErrCallerMismatch},
		{name: "common name matches but DNS names do not", id: cnOnly, callerID: "choria=rip.mcollective", wantErr: ErrCallerMismatch},
		{name: "wildcard DNS name does not match", id: wildcard, callerID: "choria=rip.mcollective", wantErr: ErrCallerMismatch},
		{name: "legacy certificate without SANs", id: legacy, callerID: "choria=rip.mcollective", wantErr: ErrCallerMismatch},
		{
			name: "legacy certificate with legacy support", id: legacy, callerID: "choria=rip.mcollective",
			cfg: &FileConfig{CAFile: pki.CAFile, SupportLegacyCertificates: true},
		},
		{
			name: "legacy support needs a certificate without any SAN", id: cnOnly, callerID: "choria=rip.mcollective", wantErr: ErrCallerMismatch,
			cfg: &FileConfig{CAFile: pki.CAFile, SupportLegacyCertificates: true},
		},
		{name: "certname outside the allow-list", id: outside, callerID: "choria=rip.example.net", wantErr: ErrNotAllowed},
		{
			name: "allow-list as /regex/", id: outside, callerID: "choria=rip.example.net",
			cfg: &FileConfig{CAFile: pki.CAFile, CertnameAllowList: []string{`/\.example\.net$/`}},
		},
		{
			name: "empty allow-list allows nobody", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrNotAllowed,
			cfg: &FileConfig{CAFile: pki.CAFile, CertnameAllowList: []string{}},
		},
		{name: "privileged user with a foreign caller id", id: priv, callerID: "choria=bob.mcollective"},
		{name: "privileged user with its own caller id", id: priv, callerID: "choria=admin.privileged.mcollective"},
		{name: "privileged by a DNS name only", id: privSAN, callerID: "choria=bob.mcollective"},
		{name: "privileged by the common name only", id: privCN, callerID: "choria=bob.mcollective"},
		{name: "privileged caller id with trailing text", id: priv, callerID: "choria=bob.mcollective/extra"},
		{
			// Like Choria, the allow-list applies only to callers that are not privileged.
			name: "privileged user outside the allow-list", id: priv, callerID: "choria=someone.example.net",
			cfg: &FileConfig{CAFile: pki.CAFile, CertnameAllowList: []string{`^nobody$`}},
		},
		{name: "privileged pattern not matching", id: notPriv, callerID: "choria=bob.mcollective", wantErr: ErrCallerMismatch},
		{
			name: "no privileged users configured", id: priv, callerID: "choria=bob.mcollective", wantErr: ErrCallerMismatch,
			cfg: &FileConfig{CAFile: pki.CAFile, PrivilegedUsers: []string{}},
		},
		{name: "privileged certificate from another CA", id: privForeign, callerID: "choria=bob.mcollective", wantErr: ErrCertificate},
		{name: "caller id without certname", id: rip, callerID: "rip.mcollective", wantErr: ErrCallerID},
		{name: "caller id with trailing text", id: rip, callerID: "choria=rip.mcollective/admin", wantErr: ErrCallerID},
		{
			name: "insecure markers", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrInsecureRequest,
			mutate: set(func(sr *v1.SecureRequest) { sr.Signature, sr.PubCert = v1.InsecureMarker, v1.InsecureMarker }),
		},
		{
			name: "insecure signature with a real pubcert", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrInsecureRequest,
			mutate: set(func(sr *v1.SecureRequest) { sr.Signature = v1.InsecureMarker }),
		},
		{
			name: "pubcert not PEM", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrInsecureRequest,
			mutate: set(func(sr *v1.SecureRequest) { sr.PubCert = "garbage" }),
		},
		{
			name: "empty pubcert", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrInsecureRequest,
			mutate: set(func(sr *v1.SecureRequest) { sr.PubCert = "" }),
		},
		{
			name: "PEM certificate block of garbage", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrCertificate,
			mutate: set(func(sr *v1.SecureRequest) {
				sr.PubCert = "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
			}),
		},
		{
			name: "PEM without a certificate", id: rip, callerID: "choria=rip.mcollective", wantErr: ErrCertificate,
			mutate: set(func(sr *v1.SecureRequest) {
				sr.PubCert = "-----BEGIN PUBLIC KEY-----\nZ2FyYmFnZQ==\n-----END PUBLIC KEY-----\n"
			}),
		},
		{name: "ECDSA certificate", id: ecdsa, callerID: "choria=rip.mcollective", wantErr: ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := def
			if tt.cfg != nil {
				v = newVerifier(t, *tt.cfg)
			}
			sr, req := signed(t, tt.id, tt.callerID, now, tt.mutate)
			checkErr(t, v.Verify(sr, req), tt.wantErr)
		})
	}
}

func TestVerifyCache(t *testing.T) {
	pki := hosttest.NewPKI(t)
	now := time.Now()
	rip := issue(t, pki, "rip.mcollective")
	bob := issue(t, pki, "bob.mcollective")
	priv := issue(t, pki, "admin.privileged.mcollective")
	short := issue(t, pki, "short.mcollective", hosttest.WithValidity(now.Add(-time.Minute), now.Add(time.Hour)))
	// The CA is valid from an hour ago for a day; these certificates claim more.
	outlives := issue(t, pki, "long.mcollective", hosttest.WithValidity(now.Add(-time.Minute), now.Add(48*time.Hour)))
	predates := issue(t, pki, "early.mcollective", hosttest.WithValidity(now.Add(-3*time.Hour), now.Add(time.Hour)))

	t.Run("a cached certificate still needs a valid signature", func(t *testing.T) {
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile})
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		if n := v.cache.len(); n != 1 {
			t.Fatalf("cache holds %d entries, want 1", n)
		}
		tampered := func(sr *v1.SecureRequest) { sr.Message = strings.Replace(sr.Message, `"ttl":60`, `"ttl":61`, 1) }
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, tampered)), ErrSignature)
	})

	t.Run("a cached certificate is checked again for another certname", func(t *testing.T) {
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile})
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, rip, "choria=bob.mcollective", now, nil)), ErrCallerMismatch)
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective/x", now, nil)), ErrCallerID)
	})

	t.Run("a cached privileged certificate keeps its privilege", func(t *testing.T) {
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile})
		checkErr(t, v.Verify(signed(t, priv, "choria=bob.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, priv, "choria=bob.mcollective/x", now, nil)), nil)
	})

	t.Run("cache entries end with the certificate", func(t *testing.T) {
		clock := now
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile}, WithClock(func() time.Time { return clock }))
		checkErr(t, v.Verify(signed(t, short, "choria=short.mcollective", now, nil)), nil)
		clock = now.Add(2 * time.Hour)
		checkErr(t, v.Verify(signed(t, short, "choria=short.mcollective", now, nil)), ErrCertificate)
		clock = now.Add(-time.Hour)
		checkErr(t, v.Verify(signed(t, short, "choria=short.mcollective", now, nil)), ErrCertificate)
	})

	t.Run("cache entries are bounded by the whole chain", func(t *testing.T) {
		clock := now
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile}, WithClock(func() time.Time { return clock }))
		checkErr(t, v.Verify(signed(t, outlives, "choria=long.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, predates, "choria=early.mcollective", now, nil)), nil)
		clock = now.Add(36 * time.Hour)
		checkErr(t, v.Verify(signed(t, outlives, "choria=long.mcollective", now, nil)), ErrCertificate)
		clock = now.Add(-2 * time.Hour)
		checkErr(t, v.Verify(signed(t, predates, "choria=early.mcollective", now, nil)), ErrCertificate)
	})

	t.Run("the cache is bounded", func(t *testing.T) {
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile, CacheSize: 2})
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, bob, "choria=bob.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, priv, "choria=bob.mcollective", now, nil)), nil)
		if n := v.cache.len(); n != 2 {
			t.Fatalf("cache holds %d entries, want 2", n)
		}
	})

	t.Run("a negative size disables the cache", func(t *testing.T) {
		v := newVerifier(t, FileConfig{CAFile: pki.CAFile, CacheSize: -1})
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		checkErr(t, v.Verify(signed(t, rip, "choria=rip.mcollective", now, nil)), nil)
		if n := v.cache.len(); n != 0 {
			t.Fatalf("cache holds %d entries, want 0", n)
		}
	})
}

// len reports the number of cached entries.
func (c *certCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func TestCertCacheLRU(t *testing.T) {
	now := time.Now()
	entry := &certEntry{notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Hour)}
	key := func(name string) cacheKey { return cacheKey{cert: sha256.Sum256([]byte(name)), certname: name} }
	c := newCertCache(2)
	c.put(key("a"), entry)
	c.put(key("b"), entry)
	if c.get(key("a"), now) == nil {
		t.Fatal("a missing")
	}
	c.put(key("c"), entry) // evicts b, the least recently used
	if c.get(key("b"), now) != nil {
		t.Error("b still cached after eviction")
	}
	if c.get(key("a"), now) == nil || c.get(key("c"), now) == nil {
		t.Error("a or c evicted")
	}
	if c.get(key("a"), now.Add(2*time.Hour)) != nil {
		t.Error("expired entry returned")
	}
	if c.len() != 1 {
		t.Errorf("expired entry not removed: %d entries", c.len())
	}
	var disabled *certCache
	disabled.put(key("a"), entry)
	if disabled.get(key("a"), now) != nil {
		t.Error("nil cache returned an entry")
	}
}

func TestNewFileVerifier(t *testing.T) {
	pki := hosttest.NewPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	badBlock := filepath.Join(dir, "bad-block.pem")
	if err := os.WriteFile(badBlock, []byte("-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cfg      FileConfig
		wantKey  string // the config key the error must name
		wantFail bool
	}{
		{name: "defaults", cfg: FileConfig{CAFile: pki.CAFile}},
		{name: "no CA", cfg: FileConfig{}, wantKey: "plugin.security.file.ca", wantFail: true},
		{name: "missing CA", cfg: FileConfig{CAFile: filepath.Join(dir, "absent.pem")}, wantKey: "plugin.security.file.ca", wantFail: true},
		{name: "CA not PEM", cfg: FileConfig{CAFile: garbage}, wantKey: "plugin.security.file.ca", wantFail: true},
		{name: "CA block not a certificate", cfg: FileConfig{CAFile: badBlock}, wantKey: "plugin.security.file.ca", wantFail: true},
		{
			name: "bad allow-list pattern", cfg: FileConfig{CAFile: pki.CAFile, CertnameAllowList: []string{`\.choria$`, `(`}},
			wantKey: "plugin.choria.security.certname_whitelist", wantFail: true,
		},
		{
			name: "bad privileged pattern", cfg: FileConfig{CAFile: pki.CAFile, PrivilegedUsers: []string{`/[/`}},
			wantKey: "plugin.choria.security.privileged_users", wantFail: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewFileVerifier(tt.cfg)
			if !tt.wantFail {
				checkErr(t, err, nil)
				return
			}
			checkErr(t, err, ErrConfig)
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Fatalf("error %q does not name %s", err, tt.wantKey)
			}
		})
	}
}

func TestCallerCertname(t *testing.T) {
	tests := []struct {
		callerID string
		want     string
		wantErr  error
	}{
		{callerID: "choria=rip.mcollective", want: "rip.mcollective"},
		{callerID: "up=bob", want: "bob"},
		{callerID: "choria=a_b-c.D9", want: "a_b-c.D9"},
		// Choria's pattern is anchored only at the start.
		{callerID: "choria=rip.mcollective/admin", want: "rip.mcollective"},
		{callerID: "choria=rip.mcollective choria=admin", want: "rip.mcollective"},
		{callerID: "rip.mcollective", wantErr: ErrCallerID},
		{callerID: "Choria=rip.mcollective", wantErr: ErrCallerID},
		{callerID: "choria=", wantErr: ErrCallerID},
		{callerID: "=rip.mcollective", wantErr: ErrCallerID},
		{callerID: "choria=/rip", wantErr: ErrCallerID},
		{callerID: "", wantErr: ErrCallerID},
	}
	for _, tt := range tests {
		t.Run(tt.callerID, func(t *testing.T) {
			got, err := CallerCertname(tt.callerID)
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Fatalf("CallerCertname(%q) = %q, want %q", tt.callerID, got, tt.want)
			}
		})
	}
}

func TestCheckTTL(t *testing.T) {
	whole := time.Unix(1_000_000, 0)
	later := whole.Add(time.Nanosecond)
	tests := []struct {
		name    string
		time    int64
		ttl     int
		now     time.Time
		wantErr error
	}{
		{name: "now", time: 1_000_000, ttl: 60, now: whole},
		{name: "just inside the past bound", time: 1_000_000 - 59, ttl: 60, now: whole},
		{name: "exactly ttl old", time: 1_000_000 - 60, ttl: 60, now: whole, wantErr: ErrExpired},
		{name: "too old", time: 1_000_000 - 3600, ttl: 60, now: whole, wantErr: ErrExpired},
		{name: "just inside the future bound", time: 1_000_000 + 59, ttl: 60, now: whole},
		{name: "exactly ttl ahead", time: 1_000_000 + 60, ttl: 60, now: whole, wantErr: ErrExpired},
		{name: "too far ahead", time: 1_000_000 + 3600, ttl: 60, now: whole, wantErr: ErrExpired},
		// now keeps its sub-second part, as in Choria.
		{name: "ttl old, now a nanosecond later", time: 1_000_000 - 60, ttl: 60, now: later, wantErr: ErrExpired},
		{name: "ttl ahead, now a nanosecond later", time: 1_000_000 + 60, ttl: 60, now: later},
		{name: "zero ttl", time: 1_000_000, ttl: 0, now: whole, wantErr: ErrExpired},
		{name: "negative ttl", time: 1_000_000, ttl: -60, now: whole, wantErr: ErrExpired},
		{name: "huge ttl does not overflow", time: 1, ttl: math.MaxInt, now: whole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckTTL(&v1.RequestEnvelope{Time: tt.time, TTL: tt.ttl}, tt.now)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckTTL = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestInsecure(t *testing.T) {
	sr := &v1.SecureRequest{Signature: v1.InsecureMarker, PubCert: v1.InsecureMarker}
	if err := (Insecure{}).Verify(sr, &v1.Request{}); err != nil {
		t.Fatalf("Insecure.Verify = %v", err)
	}
}

// captured is one message from testdata/captured.
type captured struct {
	file    string
	subject string
	payload []byte
	sr      *v1.SecureRequest
	req     *v1.Request
}

func loadCaptured(t testing.TB) []captured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "captured", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured messages in testdata/captured (%v)", err)
	}
	var out []captured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Subject string `json:"subject"`
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		tr, err := v1.DecodeTransport([]byte(doc.Payload))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		sr, err := tr.SecureRequest()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		req, err := sr.Request()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, captured{file: filepath.Base(f), subject: doc.Subject, payload: []byte(doc.Payload), sr: sr, req: req})
	}
	return out
}

func TestCapturedRequests(t *testing.T) {
	pki := hosttest.NewPKI(t)
	signedSeen := 0
	for _, c := range loadCaptured(t) {
		t.Run(c.file, func(t *testing.T) {
			// The clock is the capture time, when the client's certificate was valid.
			at := time.Unix(c.req.Envelope.Time, 0)
			v := newVerifier(t, FileConfig{CAFile: pki.CAFile}, WithClock(func() time.Time { return at }))
			if err := CheckTTL(&c.req.Envelope, at); err != nil {
				t.Fatalf("CheckTTL at capture time: %v", err)
			}
			if c.sr.Signature == v1.InsecureMarker {
				checkErr(t, v.Verify(c.sr, c.req), ErrInsecureRequest)
				return
			}
			signedSeen++

			certname, err := CallerCertname(c.req.Envelope.CallerID)
			if err != nil || certname != "rip.mcollective" {
				t.Fatalf("CallerCertname(%q) = %q, %v", c.req.Envelope.CallerID, certname, err)
			}
			leaf, _, err := parsePubCert(c.sr.PubCert)
			if err != nil {
				t.Fatalf("parsing the embedded certificate: %v", err)
			}
			pub, err := rsaKey(leaf)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := base64.StdEncoding.DecodeString(c.sr.Signature)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkSignature(pub, c.sr.Message, sig, certname); err != nil {
				t.Fatalf("the stock client's signature does not verify: %v", err)
			}
			if err := checkSignature(pub, c.sr.Message+" ", sig, certname); !errors.Is(err, ErrSignature) {
				t.Fatalf("signature verifies over a changed message: %v", err)
			}
			// Signed by a CA we do not have: full verification must refuse it.
			checkErr(t, v.Verify(c.sr, c.req), ErrCertificate)
		})
	}
	if signedSeen == 0 {
		t.Fatal("no signed captured request")
	}
}

func TestLoadSigner(t *testing.T) {
	pki := hosttest.NewPKI(t)
	ripCert, ripKey := pki.Issue(t, "rip.mcollective")
	_, pkcs8Key := pki.Issue(t, "pkcs8.mcollective", hosttest.WithPKCS8())
	pkcs8Cert := strings.TrimSuffix(pkcs8Key, ".key") + ".pem"
	ecCert, ecKey := pki.Issue(t, "ec.mcollective", hosttest.WithECDSA())
	_, bobKey := pki.Issue(t, "bob.mcollective")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		cert, key string
		wantErr   error // nil with wantFail: any error
		wantFail  bool
	}{
		{name: "PKCS#1", cert: ripCert, key: ripKey},
		{name: "PKCS#8", cert: pkcs8Cert, key: pkcs8Key},
		{name: "ECDSA key", cert: ecCert, key: ecKey, wantErr: ErrKey, wantFail: true},
		{name: "key of another certificate", cert: ripCert, key: bobKey, wantErr: ErrKey, wantFail: true},
		{name: "garbage key", cert: ripCert, key: garbage, wantErr: ErrKey, wantFail: true},
		{name: "key is not PEM", cert: ripCert, key: ripCert, wantErr: ErrKey, wantFail: true},
		{name: "certificate is not PEM", cert: ripKey, key: ripKey, wantErr: ErrCertificate, wantFail: true},
		{name: "missing key", cert: ripCert, key: filepath.Join(dir, "absent.key"), wantErr: os.ErrNotExist, wantFail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer, certPEM, err := LoadSigner(tt.cert, tt.key)
			if tt.wantFail {
				if err == nil || !errors.Is(err, tt.wantErr) {
					t.Fatalf("LoadSigner error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			if _, ok := signer.(*rsa.PrivateKey); !ok {
				t.Fatalf("signer is %T", signer)
			}
			want, _ := os.ReadFile(tt.cert)
			if string(certPEM) != string(want) {
				t.Fatal("certificate PEM is not the file's text")
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	pki := hosttest.NewPKI(t)
	certFile, keyFile := pki.Issue(t, "rip.mcollective")

	tc, err := TLSConfig(certFile, keyFile, pki.CAFile)
	if err != nil {
		t.Fatalf("TLSConfig: %v", err)
	}
	if tc.MinVersion != tls.VersionTLS12 || len(tc.Certificates) != 1 || tc.RootCAs == nil || tc.InsecureSkipVerify {
		t.Fatalf("TLSConfig = MinVersion %x, %d certificates, RootCAs %v, InsecureSkipVerify %v", tc.MinVersion, len(tc.Certificates), tc.RootCAs, tc.InsecureSkipVerify)
	}
	if _, err := TLSConfig(certFile, keyFile, keyFile); !errors.Is(err, ErrConfig) {
		t.Fatalf("TLSConfig with a key as CA: %v, want %v", err, ErrConfig)
	}
	if _, err := TLSConfig(certFile, filepath.Join(t.TempDir(), "absent.key"), pki.CAFile); err == nil {
		t.Fatal("TLSConfig without a key succeeded")
	}
}
