package resilhttp

import (
	"math"
	"time"
)

// maxSeconds is the largest delta-seconds value that fits a time.Duration.
const maxSeconds = int64(math.MaxInt64 / time.Second)

// ParseRetryAfter parses the value of a Retry-After header field as RFC 9110
// (section 10.2.3) defines it, either delay-seconds (1*DIGIT) or an HTTP-date
// in one of its three formats (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT",
// the obsolete RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" and asctime "Sun Nov
// 6 08:49:37 1994"), and returns how long after now it asks a client to wait.
//
// Leading and trailing spaces and tabs are ignored. A value beyond
// time.Duration's range gives (math.MaxInt64, true); a date at or before now
// gives (0, true); a value that is neither gives (0, false). The result is
// never negative. A two-digit RFC 850 year more than 50 years after now's is
// read as the most recent past year with those digits, as RFC 9110 says.
// Day names are checked for syntax, not against the date.
//
// ParseRetryAfter does not allocate and is safe for concurrent use. It never
// caps the result: Transport does that with MaxRetryAfter.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	v := trimOWS(value)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		var secs int64
		for i := 0; i < len(v); i++ {
			secs = secs*10 + int64(v[i]-'0')
			if secs > maxSeconds {
				// All further digits only make it larger; secs stays far
				// below overflow here (at most 10*maxSeconds+9).
				return math.MaxInt64, true
			}
		}
		return time.Duration(secs) * time.Second, true
	}
	t, ok := parseHTTPDate(v, now)
	if !ok {
		return 0, false
	}
	d := t.Sub(now) // saturates at math.MaxInt64 instead of overflowing
	if d < 0 {
		return 0, true
	}
	return d, true
}

// trimOWS removes optional whitespace (SP and HTAB) around s.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

var (
	shortDays = [...]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
	longDays  = [...]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
	months    = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// parseHTTPDate parses the three HTTP-date formats of RFC 9110 section
// 5.6.7, exactly: fixed widths, case-sensitive names, GMT only.
func parseHTTPDate(v string, now time.Time) (time.Time, bool) {
	switch {
	case len(v) == 29 && v[3] == ',':
		// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
		if !oneOf(v[:3], shortDays[:]) || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
			v[16] != ' ' || v[25:] != " GMT" {
			return time.Time{}, false
		}
		day, ok1 := num(v[5:7])
		month, ok2 := monthOf(v[8:11])
		year, ok3 := num(v[12:16])
		if !ok1 || !ok2 || !ok3 {
			return time.Time{}, false
		}
		return dateTime(year, month, day, v[17:25])
	case len(v) == 24 && v[3] == ' ':
		// asctime: "Sun Nov  6 08:49:37 1994" (the day is " 6" or "06" or "16")
		if !oneOf(v[:3], shortDays[:]) || v[7] != ' ' || v[10] != ' ' || v[19] != ' ' {
			return time.Time{}, false
		}
		month, ok1 := monthOf(v[4:7])
		d := v[8:10]
		if d[0] == ' ' {
			d = d[1:]
		}
		day, ok2 := num(d)
		year, ok3 := num(v[20:24])
		if !ok1 || !ok2 || !ok3 {
			return time.Time{}, false
		}
		return dateTime(year, month, day, v[11:19])
	default:
		// rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT"
		comma := -1
		for i := 6; i <= 9 && i < len(v); i++ {
			if v[i] == ',' {
				comma = i
				break
			}
		}
		if comma < 0 || !oneOf(v[:comma], longDays[:]) {
			return time.Time{}, false
		}
		r := v[comma+1:]
		// " 06-Nov-94 08:49:37 GMT"
		if len(r) != 23 || r[0] != ' ' || r[3] != '-' || r[7] != '-' || r[10] != ' ' || r[19:] != " GMT" {
			return time.Time{}, false
		}
		day, ok1 := num(r[1:3])
		month, ok2 := monthOf(r[4:7])
		yy, ok3 := num(r[8:10])
		if !ok1 || !ok2 || !ok3 {
			return time.Time{}, false
		}
		// RFC 9110: a two-digit year that appears to be more than 50 years
		// in the future is the most recent past year with those digits.
		cur := now.UTC().Year()
		year := cur - cur%100 + yy
		switch {
		case year > cur+50:
			year -= 100
		case year+100 <= cur+50:
			year += 100
		}
		return dateTime(year, month, day, r[11:19])
	}
}

// dateTime checks the ranges of a date and a time-of-day "hh:mm:ss" and
// returns the instant, in UTC. Second 60 (a leap second) is allowed.
func dateTime(year int, month time.Month, day int, hms string) (time.Time, bool) {
	if hms[2] != ':' || hms[5] != ':' {
		return time.Time{}, false
	}
	h, ok1 := num(hms[0:2])
	m, ok2 := num(hms[3:5])
	s, ok3 := num(hms[6:8])
	if !ok1 || !ok2 || !ok3 || h > 23 || m > 59 || s > 60 {
		return time.Time{}, false
	}
	// The last day of the month: day 0 of the next month.
	if day < 1 || day > time.Date(year, month+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return time.Time{}, false
	}
	return time.Date(year, month, day, h, m, s, 0, time.UTC), true
}

// num parses a short run of ASCII digits.
func num(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func monthOf(s string) (time.Month, bool) {
	for i, m := range months {
		if s == m {
			return time.Month(i + 1), true
		}
	}
	return 0, false
}

func oneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
