package resilhttp_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/require"
)

// TestSchemeMismatchSurvives: an https URL to a plain-HTTP server.
// http.Client turns Base's bare tls.RecordHeaderError into
// http.ErrSchemeMismatch by a type assertion, not errors.As: through
// resilhttp, whatever the pipeline, the client must still recognise it.
func TestSchemeMismatchSurvives(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }, nil)
	url := strings.Replace(s.URL, "http://", "https://", 1)

	_, err := (&http.Client{Transport: base(t)}).Get(url)
	require.ErrorIs(t, err, http.ErrSchemeMismatch, "reference: without resilhttp")

	for name, rt := range map[string]http.RoundTripper{
		"empty pipeline": &resilhttp.Transport{Base: base(t)},
		"retry":          &resilhttp.Transport{Base: base(t), Pipeline: retry(3)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := (&http.Client{Transport: rt}).Get(url)
			require.ErrorIs(t, err, http.ErrSchemeMismatch, "through resilhttp: %v", err)
		})
	}
}
