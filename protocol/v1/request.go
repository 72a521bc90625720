package v1

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/agent-host/agent-host/protocol"
)

// InsecureMarker is what a Choria client built without request signing
// puts in both signature and pubcert. Servers that verify must refuse it.
const InsecureMarker = "insecure"

// NewRequestID returns 32 random lowercase hex characters, the shape
// Choria uses (a UUID v4 without dashes).
func NewRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating request id: %w", err)
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return hex.EncodeToString(b[:]), nil
}

// NewRequest builds a request as the Choria client does. body is placed
// in the message verbatim; discovery requests pass base64("ping").
func NewRequest(env RequestEnvelope, body []byte) *Request {
	if env.Filter == nil {
		env.Filter = protocol.NewFilter()
	}
	return &Request{Protocol: RequestProtocol, Message: string(body), Envelope: env}
}

// Seal signs the request with the caller's RSA key and attaches its
// certificate. A nil signer produces the "insecure" markers.
func (r *Request) Seal(signer crypto.Signer, certPEM []byte) (*SecureRequest, error) {
	msg, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	s := &SecureRequest{Protocol: SecureRequestProtocol, Message: string(msg), Signature: InsecureMarker, PubCert: InsecureMarker}
	if signer == nil {
		return s, nil
	}
	digest := sha256.Sum256(msg)
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing request: %w", err)
	}
	s.Signature = base64.StdEncoding.EncodeToString(sig)
	s.PubCert = string(certPEM)
	return s, nil
}

// EncodeRequest wraps a secure request in a transport addressed for
// replies on replyTo, sent by sender (the client's identity).
func EncodeRequest(s *SecureRequest, replyTo, sender string) ([]byte, error) {
	data, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encoding secure request: %w", err)
	}
	t, err := json.Marshal(Transport{Protocol: TransportProtocol, Data: data, Headers: TransportHeaders{ReplyTo: replyTo, MCSender: sender}})
	if err != nil {
		return nil, fmt.Errorf("encoding request transport: %w", err)
	}
	return t, nil
}
