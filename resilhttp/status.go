package resilhttp

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"time"

	"github.com/resil-go/resil/internal/errchain"
)

// StatusError is the error an attempt fails with when the server answered
// with a failure status: 408, 429 and 5xx (transient, retried), or any other
// 4xx, 501 and 505 (permanent: marked with resil.Permanent, never retried,
// never a breaker failure). Transport.RoundTrip does not return it: when no
// attempt is left, the response it stands for is returned with a nil error.
// Stages see it (a Fallback's err, RetryPolicy.RetryIf, an Observer); match
// it with errors.As.
//
// A StatusError is created by Transport for one attempt and is not modified
// afterwards: it is safe to read from any goroutine. The zero value is a
// permanent error with status code 0.
type StatusError struct {
	StatusCode int           // the response's status code, e.g. 503
	Status     string        // http.Response.Status, e.g. "503 Service Unavailable"
	Wait       time.Duration // the server's Retry-After, capped by MaxRetryAfter; 0 when absent, unparsable or past

	resp *http.Response // the response it stands for; RoundTrip returns it when nothing else is left
}

// Error returns "resilhttp: " followed by the status, e.g.
// "resilhttp: 503 Service Unavailable".
func (e *StatusError) Error() string {
	if e.Status != "" {
		return "resilhttp: " + e.Status
	}
	return "resilhttp: status " + strconv.Itoa(e.StatusCode)
}

// Transient reports whether the status is worth retrying: 408 Request
// Timeout, 429 Too Many Requests, and every 5xx except 501 Not Implemented
// and 505 HTTP Version Not Supported. resil.IsTransient asks this method.
func (e *StatusError) Transient() bool { return transientStatus(e.StatusCode) }

// RetryAfter returns Wait: the server's Retry-After, capped. A Retry stage
// waits this long before the next attempt when it is > 0 (and uses its
// backoff otherwise), unless the wait would cross RetryPolicy.MaxElapsed or
// the context's deadline: then it gives up at once.
func (e *StatusError) RetryAfter() time.Duration { return e.Wait }

// transientStatus: 408, 429, 5xx but 501 and 505.
func transientStatus(code int) bool {
	switch {
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		return true
	case code == http.StatusNotImplemented, code == http.StatusHTTPVersionNotSupported:
		return false
	}
	return code >= 500 && code <= 599
}

// failureStatus: every 4xx and 5xx.
func failureStatus(code int) bool { return code >= 400 && code <= 599 }

// permanentError reports whether err, returned by Base, can only come back
// the same however often the request is sent: a TLS certificate the client
// rejects (or that the server rejects), a TLS handshake with something that
// is not a TLS server, an address that cannot be dialled as written, or a
// request that Base refuses to send (checked only after Base failed, so the
// cost is paid only then).
func permanentError(err error, req *http.Request) bool {
	if has[*tls.CertificateVerificationError](err) || has[x509.UnknownAuthorityError](err) ||
		has[x509.CertificateInvalidError](err) || has[x509.HostnameError](err) ||
		has[tls.RecordHeaderError](err) || has[*net.AddrError](err) {
		return true
	}
	if alert, ok := tlsAlert(err); ok {
		// The server refused our certificate.
		switch alert {
		case 42, 43, 44, 45, 46, 48, 116: // bad, unsupported, revoked, expired, unknown certificate; unknown CA; certificate required
			return true
		}
		return false
	}
	return invalidRequest(req, err)
}

// tlsAlert returns the TLS alert the peer sent, if err is one. Over TCP,
// crypto/tls reports it as a *net.OpError whose Op is "remote error" and
// whose Err is the alert, of an unexported uint8 type of crypto/tls
// (tls.AlertError is what it reports over QUIC).
func tlsAlert(err error) (uint8, bool) {
	if alert, ok := errchain.As[tls.AlertError](err); ok {
		return uint8(alert), true
	}
	oe, ok := errchain.As[*net.OpError](err)
	if !ok || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(oe.Err); v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" {
		return uint8(v.Uint()), true
	}
	return 0, false
}

// invalidRequest reports whether req is one http.Transport refuses to send
// (and says so with an error that has no type to match): no URL or header
// map, a scheme it does not speak (unless the error is a network error: a
// protocol registered with RegisterProtocol may dial), no host, a method
// that is not a token, a header field name that is not a token or a value
// with control characters, a ContentLength with no Body to send.
func invalidRequest(req *http.Request, err error) bool {
	if req.URL == nil || req.Header == nil || (req.Body == nil && req.ContentLength > 0) {
		return true
	}
	switch req.URL.Scheme {
	case "http", "https":
	default:
		return !has[net.Error](err)
	}
	if req.URL.Host == "" {
		return true
	}
	if req.Method != "" && !isToken(req.Method) {
		return true
	}
	for _, h := range []http.Header{req.Header, req.Trailer} {
		for k, vs := range h {
			if !isToken(k) {
				return true
			}
			for _, v := range vs {
				for i := 0; i < len(v); i++ {
					if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
						return true
					}
				}
			}
		}
	}
	return false
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '!', c == '#', c == '$', c == '%', c == '&', c == '\'', c == '*',
			c == '+', c == '-', c == '.', c == '^', c == '_', c == '`', c == '|', c == '~':
		default:
			return false
		}
	}
	return true
}

// has reports whether err's chain holds an E, as errors.As finds one,
// looking at no more than errchain.MaxWalk errors: Base's error may cycle.
func has[E error](err error) bool {
	_, ok := errchain.As[E](err)
	return ok
}
