package security

import (
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// LoadSigner loads an RSA private key (PKCS#1 or PKCS#8 PEM) and the PEM
// certificate that goes with it, for signing requests as Choria's file
// provider does. The certificate is returned as read, since that text is
// what a request embeds as its pubcert. The key must belong to the
// certificate: a mismatch would only show up as rejected requests.
func LoadSigner(certFile, keyFile string) (crypto.Signer, []byte, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading certificate: %w", err)
	}
	leaf, _, err := parsePubCert(string(certPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading private key: %w", err)
	}
	key, err := parseRSAKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("private key %s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("%w: private key %s does not belong to certificate %s", ErrKey, keyFile, certFile)
	}
	return key, certPEM, nil
}

// parseRSAKey finds the first private key block; other blocks (such as EC
// parameters) are skipped. Encrypted keys are not supported.
func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%w: no PEM private key found", ErrKey)
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: the %s block is not an RSA key in PKCS#1 or PKCS#8 form (Choria signs requests only with RSA; encrypted keys are not supported)", ErrKey, block.Type)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: the key is %T, but Choria requests are signed only with RSA keys", ErrKey, k)
		}
		return rk, nil
	}
}

// TLSConfig builds the client TLS settings for the broker connection, like
// Choria's file provider: TLS 1.2 or later, the certificate presented as a
// client certificate and the broker verified against the CA. Any key type
// tls accepts works here; only request signing needs RSA.
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	roots, err := loadCA(caFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS CA: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
	}, nil
}
