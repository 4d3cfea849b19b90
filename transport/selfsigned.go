package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files of the self-signed certificate inside the state directory.
const (
	selfSignedCert = "server.crt"
	selfSignedKey  = "server.key"
)

// SelfSignedCert is the path of the self-signed certificate (PEM) in the
// state directory dir, for tools that read its fingerprint.
func SelfSignedCert(dir string) string { return filepath.Join(dir, selfSignedCert) }

// selfSignedValidity is long because clients pin the certificate itself:
// rotating it means re-pinning every client, so it should not expire under
// a running deployment.
const selfSignedValidity = 20 * 365 * 24 * time.Hour

// selfSigned loads the server's self-signed certificate from dir, creating
// dir and the certificate on first use. Restarts keep the same certificate
// and so the same fingerprint.
func selfSigned(dir string) (cert tls.Certificate, created bool, err error) {
	certPath := filepath.Join(dir, selfSignedCert)
	keyPath := filepath.Join(dir, selfSignedKey)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		cert, err = tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return cert, false, fmt.Errorf("state_dir: self-signed certificate: %w", err)
		}
		return cert, false, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr == nil || keyErr == nil:
		// Never overwrite half of a pair: the missing half may be a mistake
		// worth a look, and a new pair would change the fingerprint.
		return cert, false, fmt.Errorf("state_dir: only one of %s and %s exists; remove it to create a new certificate", certPath, keyPath)
	default:
		return cert, false, fmt.Errorf("state_dir: %w", errors.Join(certErr, keyErr))
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cert, false, fmt.Errorf("state_dir: %w", err)
	}
	certPEM, keyPEM, err := newSelfSigned()
	if err != nil {
		return cert, false, err
	}
	// Key first: a crash between the two writes leaves a lone key, which the
	// check above reports instead of silently pairing it with nothing.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return cert, false, fmt.Errorf("state_dir: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return cert, false, fmt.Errorf("state_dir: %w", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, true, err
}

// newSelfSigned makes an ECDSA P-256 certificate and key, PEM encoded.
func newSelfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "warren self-signed"},
		DNSNames:              []string{"warren"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// writeFileAtomic writes data to path through a temporary file and a rename,
// so a reader never sees a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
