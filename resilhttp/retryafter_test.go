package resilhttp_test

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/resil-go/resil/resilhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// now is the instant the table is read against: Sun, 06 Nov 1994 08:49:37 GMT.
var now = time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		// delay-seconds
		{"0", 0, true},
		{"1", time.Second, true},
		{"120", 2 * time.Minute, true},
		{"007", 7 * time.Second, true},
		{" 5\t", 5 * time.Second, true},
		{"9223372036", 9223372036 * time.Second, true}, // the largest that fits
		{"9223372037", math.MaxInt64, true},            // beyond: saturates
		{"99999999999999999999999999999999", math.MaxInt64, true},
		{strings.Repeat("9", 10000), math.MaxInt64, true},
		// HTTP-dates, all three formats
		{"Sun, 06 Nov 1994 08:49:37 GMT", 0, true}, // now
		{"Sun, 06 Nov 1994 08:49:47 GMT", 10 * time.Second, true},
		{"Sunday, 06-Nov-94 08:49:47 GMT", 10 * time.Second, true},
		{"Sun Nov  6 08:49:47 1994", 10 * time.Second, true},
		{"Sun Nov 06 08:49:47 1994", 10 * time.Second, true},
		{"Mon, 07 Nov 1994 08:49:37 GMT", 24 * time.Hour, true},
		{"Sat, 05 Nov 1994 08:49:37 GMT", 0, true},             // past
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0, true},             // long past
		{"Fri, 31 Dec 9999 23:59:59 GMT", math.MaxInt64, true}, // beyond time.Duration
		{"Thu, 29 Feb 1996 00:00:00 GMT", time.Date(1996, 2, 29, 0, 0, 0, 0, time.UTC).Sub(now), true},
		{"Sun, 06 Nov 1994 08:49:60 GMT", 23 * time.Second, true}, // leap second
		{"Friday, 31-Dec-93 23:59:59 GMT", 0, true},               // 1993: past
		{"Friday, 31-Dec-99 23:59:59 GMT", time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC).Sub(now), true},
		{"Saturday, 01-Jan-00 00:00:00 GMT", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Sub(now), true},
		{"Saturday, 01-Jan-44 00:00:00 GMT", time.Date(2044, 1, 1, 0, 0, 0, 0, time.UTC).Sub(now), true},
		{"Saturday, 01-Jan-45 00:00:00 GMT", 0, true}, // 1945
		// not a Retry-After value
		{"", 0, false},
		{"   ", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"1 2", 0, false},
		{"soon", 0, false},
		{"١٢", 0, false}, // non-ASCII digits
		{"Sun, 06 Nov 1994 08:49:37 UTC", 0, false},
		{"Sun, 06 Nov 1994 08:49:37 gmt", 0, false},
		{"sun, 06 Nov 1994 08:49:37 GMT", 0, false},
		{"Sun, 06 nov 1994 08:49:37 GMT", 0, false},
		{"Sun, 6 Nov 1994 08:49:37 GMT", 0, false},
		{"Sun, 06 Nov 94 08:49:37 GMT", 0, false},
		{"Sun, 06 Nov 1994 08:49:37.5 GMT", 0, false},
		{"Sun, 06 Nov 1994 8:49:37 GMT", 0, false},
		{"Sun, 31 Nov 1994 08:49:37 GMT", 0, false}, // no 31 November
		{"Sun, 29 Feb 1995 08:49:37 GMT", 0, false}, // not a leap year
		{"Sun, 00 Nov 1994 08:49:37 GMT", 0, false},
		{"Sun, 06 Nov 1994 24:00:00 GMT", 0, false},
		{"Sun, 06 Nov 1994 08:60:00 GMT", 0, false},
		{"Sun, 06 Nov 1994 08:49:61 GMT", 0, false},
		{"Xyz, 06 Nov 1994 08:49:37 GMT", 0, false},
		{"Sun, 06 Nov 1994 08:49:37 GMT+1", 0, false},
		{"Sun, 06 Nov 1994 08-49-37 GMT", 0, false},
		{"Sundae, 06-Nov-94 08:49:37 GMT", 0, false},
		{"Sunday, 06-Nov-1994 08:49:37 GMT", 0, false},
		{"Sunday, 06-Nov-94 08:49:37 PST", 0, false},
		{"Sun Nov 6 08:49:37 1994", 0, false},
		{"Sun Nov  6 08:49:37 94", 0, false},
		{"Sun Nov  6 08:49:37 1994 GMT", 0, false},
		{"1994-11-06T08:49:37Z", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, ok := resilhttp.ParseRetryAfter(tt.value, now)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestParseRetryAfterTwoDigitYear: RFC 9110 reads a two-digit year more
// than 50 years ahead as the most recent past year with those digits.
func TestParseRetryAfterTwoDigitYear(t *testing.T) {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		yy   string
		year int
	}{{"30", 2030}, {"80", 2080}, {"81", 1981}, {"99", 1999}, {"00", 2000}, {"79", 2079}} {
		d, ok := resilhttp.ParseRetryAfter("Tuesday, 01-Jan-"+tt.yy+" 00:00:01 GMT", at)
		require.True(t, ok)
		want := time.Date(tt.year, 1, 1, 0, 0, 1, 0, time.UTC).Sub(at)
		assert.Equal(t, max(want, 0), d, tt.yy)
	}
}

func TestParseRetryAfterAllocs(t *testing.T) {
	for _, v := range []string{"120", "Sun, 06 Nov 1994 08:49:47 GMT", "Sunday, 06-Nov-94 08:49:47 GMT", "garbage"} {
		assert.Zero(t, testing.AllocsPerRun(100, func() { resilhttp.ParseRetryAfter(v, now) }), v)
	}
}

// FuzzParseRetryAfter checks, for any input, that the result is never
// negative, that a rejected value gives 0, that digits give their seconds
// (saturated), and that every date accepted is one net/http reads the same.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{
		"0", "120", "9223372036", "9223372037", "-1", "1.5", "", " 7 ",
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Fri, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "Sun, 31 Nov 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 08:49:60 GMT", "Sun Nov 16 08:49:37 1994", "Wed, 29 Feb 2000 00:00:00 GMT",
	} {
		f.Add(s, int64(784111777))
	}
	f.Fuzz(func(t *testing.T, v string, unix int64) {
		at := time.Unix(unix%(1<<40), 0).UTC() // years around 1970 +/- 35000
		d, ok := resilhttp.ParseRetryAfter(v, at)
		if d < 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v: negative", v, d)
		}
		if !ok {
			if d != 0 {
				t.Fatalf("ParseRetryAfter(%q) = %v, false: want 0", v, d)
			}
			return
		}
		s := strings.Trim(v, " \t")
		if s != "" && strings.Trim(s, "0123456789") == "" {
			n, err := strconv.ParseInt(s, 10, 64)
			want := time.Duration(math.MaxInt64)
			if err == nil && n <= math.MaxInt64/int64(time.Second) {
				want = time.Duration(n) * time.Second
			}
			if d != want {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %v", v, d, want)
			}
			return
		}
		// A date. IMF-fixdate and asctime carry a four-digit year, so
		// net/http must read them the same (it has no leap second).
		if len(s) == 24 || (len(s) == 29 && s[3] == ',') {
			if (len(s) == 29 && s[23:25] == "60") || (len(s) == 24 && s[17:19] == "60") {
				return
			}
			pt, err := http.ParseTime(s)
			if err != nil {
				t.Fatalf("ParseRetryAfter(%q) accepted what net/http rejects: %v", v, err)
			}
			if want := max(pt.Sub(at), 0); d != want {
				t.Fatalf("ParseRetryAfter(%q) = %v, net/http says %v", v, d, want)
			}
		}
	})
}
