package wire

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gochat/gochat/kitex_gen/repoapi"
)

func TestParseType(t *testing.T) {
	tests := []struct {
		in   string
		want int8
		ok   bool
	}{
		{``, 1, true}, {`null`, 1, true}, {`"text"`, 1, true}, {`"image"`, 2, true}, {`"file"`, 3, true},
		{`1`, 1, true}, {`2`, 2, true}, {`3`, 3, true}, {`"3"`, 3, true}, {`""`, 1, true},
		{`0`, 0, false}, {`4`, 0, false}, {`"video"`, 0, false}, {`1.5`, 0, false}, {`{}`, 0, false}, {`true`, 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseType(json.RawMessage(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseType(%s) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSendMessageAliases(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"tempMessageId":"a"}`, "a"},
		{`{"clientMsgId":"b"}`, "b"},
		{`{"client_msg_id":"c"}`, "c"},
		{`{"tempMessageId":123}`, "123"},
		{`{"tempMessageId":"a","clientMsgId":"b"}`, "a"},
		{`{}`, ""},
	}
	for _, tt := range tests {
		var s SendMessage
		if err := json.Unmarshal([]byte(tt.in), &s); err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := s.TempID(); got != tt.want {
			t.Errorf("TempID(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var s SendMessage
	if err := json.Unmarshal([]byte(`{"tempMessageId":{}}`), &s); err == nil {
		t.Error("object temp id accepted")
	}
}

func TestTimeFormat(t *testing.T) {
	if got := Time(1795789800123); got != "2026-11-27T14:30:00.123Z" {
		t.Fatalf("Time = %q", got)
	}
	if got := Time(1795789800000); got != "2026-11-27T14:30:00.000Z" {
		t.Fatalf("Time keeps zero millis: %q", got)
	}
	if Time(0) != "" {
		t.Fatal("zero time must be empty")
	}
}

// Time writes the digits itself; it must agree with Format everywhere: at the
// edges of days, months, leap years and of the four-digit years, before 1970, and
// over a million instants spread across the years 0000–9999 and beyond.
func TestTimeMatchesFormat(t *testing.T) {
	at := func(s string) int64 {
		tm, err := time.Parse(TimeLayout, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	edges := []int64{
		1, -1, 999, -999, 1000, 86_399_999, 86_400_000,
		at("2024-02-29T23:59:59.999Z"), at("2024-03-01T00:00:00.000Z"), at("2100-02-28T23:59:59.999Z"),
		at("2000-02-29T12:00:00.500Z"), at("1969-12-31T23:59:59.999Z"), at("0001-01-01T00:00:00.000Z"),
		at("0000-01-01T00:00:00.000Z"), at("9999-12-31T23:59:59.999Z"), at("9999-12-31T23:59:59.999Z") + 1,
		at("0000-01-01T00:00:00.000Z") - 1, math.MaxInt64, math.MinInt64 + 1,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	lo, hi := at("0000-01-01T00:00:00.000Z")-86_400_000_000, at("9999-12-31T23:59:59.999Z")+86_400_000_000
	for range 1_000_000 {
		edges = append(edges, lo+rng.Int64N(hi-lo))
	}
	for _, ms := range edges {
		if ms == 0 {
			continue
		}
		if got, want := Time(ms), time.UnixMilli(ms).UTC().Format(TimeLayout); got != want {
			t.Fatalf("Time(%d) = %q, Format gives %q", ms, got, want)
		}
	}
}

func TestEncodeShape(t *testing.T) {
	b := Encode("pong", nil)
	if string(b) != `{"type":"pong"}` {
		t.Fatalf("pong = %s", b)
	}
	b = Encode("message-ack", Ack{TempMessageID: "t", ClientMsgID: "t", MessageID: ID(1<<62 + 1), SeqID: 3})
	var f struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Type != "message-ack" || f.Data["messageId"] != "4611686018427387905" || f.Data["seqId"] != float64(3) {
		t.Fatalf("ack frame = %s", b)
	}
}

func TestIdempotencyKey(t *testing.T) {
	if got := IdempotencyKey("client-1"); got != "client-1" {
		t.Fatalf("client key replaced: %q", got)
	}
	a, b := IdempotencyKey(""), IdempotencyKey("")
	if a == b || len(a) > 64 || a == "" {
		t.Fatalf("generated keys %q %q: want distinct, non-empty, at most 64 bytes", a, b)
	}
	// Generated keys never reach clients; their own keys do.
	m := MessageFrom(&repoapi.Message{Id: 1, ClientMsgId: a})
	if m.ClientMsgID != "" {
		t.Fatalf("generated key leaked: %+v", m)
	}
	if m := MessageFrom(&repoapi.Message{Id: 1, ClientMsgId: "mine"}); m.ClientMsgID != "mine" {
		t.Fatalf("client key lost: %+v", m)
	}
}

// flexByDecoder is what Flex decoded to before its fast path: the standard
// decoder's reading as a string, else as a number.
func flexByDecoder(b []byte) (string, error) {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return "", err
	}
	return n.String(), nil
}

// Flex's fast path for plain strings must agree with the decoder on every value.
func TestFlexAgreesWithDecoder(t *testing.T) {
	for _, in := range flexSeeds {
		checkFlex(t, []byte(in))
	}
}

func FuzzFlex(f *testing.F) {
	for _, in := range flexSeeds {
		f.Add([]byte(in))
	}
	f.Fuzz(checkFlex)
}

var flexSeeds = []string{
	`"t-1"`, `""`, `"a\"b"`, `"a\\b"`, `"\u00e9"`, `"é"`, "\"\xff\"", "\"a\x01\"", `"tab	in"`,
	`12345678901234567890`, `-1.5e3`, `null`, `true`, `{}`, `"`, `"a"b"`, `"a`, ` "x" `,
}

func checkFlex(t *testing.T, b []byte) {
	t.Helper()
	want, wantErr := flexByDecoder(b)
	var f Flex
	err := f.UnmarshalJSON(b)
	if (err != nil) != (wantErr != nil) || (err == nil && string(f) != want) {
		t.Fatalf("Flex(%q) = %q, %v; the decoder says %q, %v", b, f, err, want, wantErr)
	}
}
