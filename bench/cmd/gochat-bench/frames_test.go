package main

import (
	"testing"
	"time"
)

func TestSplitFrame(t *testing.T) {
	tests := []struct {
		in       string
		typ      string
		data     string
		ok       bool
		describe string
	}{
		{`{"type":"new-message","data":{"a":1}}`, "new-message", `{"a":1}`, true, "gateway shape"},
		{`{"type":"pong"}`, "pong", "", true, "no data"},
		{`{"type":"pong","data":null}`, "pong", "null", true, "null data"},
		{`{"data":{},"type":"x"}`, "", "", false, "other key order: decode properly"},
		{`{"type":"a\"b","data":1}`, "", "", false, "escaped type"},
		{`{"type":"x","extra":1}`, "", "", false, "unknown shape"},
	}
	for _, tt := range tests {
		typ, data, ok := splitFrame([]byte(tt.in))
		if ok != tt.ok || typ != tt.typ || string(data) != tt.data {
			t.Errorf("%s: splitFrame(%s) = %q, %q, %v; want %q, %q, %v", tt.describe, tt.in, typ, data, ok, tt.typ, tt.data, tt.ok)
		}
	}
}

func TestReadPushAndAck(t *testing.T) {
	conv, text, ok := readPush([]byte(`{"conversationId":"world","message":{"conversationId":"world","content":"bench 7 123"}}`))
	if !ok || conv != "world" || text != "bench 7 123" {
		t.Errorf("fast path: %q %q %v", conv, text, ok)
	}
	// An escaped content falls back to the decoder, which unescapes it.
	conv, text, ok = readPush([]byte(`{"conversationId":"g","message":{"content":"say \"hi\""}}`))
	if !ok || conv != "g" || text != `say "hi"` {
		t.Errorf("fallback: %q %q %v", conv, text, ok)
	}
	if _, _, ok := readPush([]byte(`{"conversationId":1}`)); ok {
		t.Error("malformed push accepted")
	}
	if id, ok := readAck([]byte(`{"tempMessageId":"42","seqId":3}`)); !ok || id != "42" {
		t.Errorf("ack: %q %v", id, ok)
	}
	if _, ok := readAck([]byte(`not json`)); ok {
		t.Error("malformed ack accepted")
	}
}

func TestContentRoundTrip(t *testing.T) {
	i, ns, ok := parseContent(content(12, timeAt(987654321)))
	if !ok || i != 12 || ns != 987654321 {
		t.Errorf("parseContent = %d %d %v", i, ns, ok)
	}
	for _, bad := range []string{"hello", "bench x 1", "bench 1", "bench 1 y"} {
		if _, _, ok := parseContent(bad); ok {
			t.Errorf("parseContent(%q) accepted", bad)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"500": 500, "10k": 10000, "1.5m": 1.5e6, "2.5": 2.5} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-3", "k", "fast"} {
		if _, err := parseRate(bad); err == nil {
			t.Errorf("parseRate(%q) accepted", bad)
		}
	}
}

func timeAt(ns int64) time.Time { return time.Unix(0, ns) }
