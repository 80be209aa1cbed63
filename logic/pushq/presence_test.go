package pushq

import (
	"errors"
	"testing"
)

func TestPresenceRoundTrip(t *testing.T) {
	p := Push{Kind: KindPresence, Presence: &Presence{UserID: 42, Online: true}, Recipients: []int64{7, 9}}
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodePush(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != KindPresence || got.Presence == nil || *got.Presence != *p.Presence || len(got.Recipients) != 2 {
		t.Fatalf("round trip = %+v", got)
	}
	if string(p.Key()) != "user:42" {
		t.Fatalf("presence key = %q", p.Key())
	}
	for name, bad := range map[string]string{
		"no presence":   `{"kind":"presence","to":[1]}`,
		"no recipients": `{"kind":"presence","presence":{"user":"5","online":true}}`,
		"unknown kind":  `{"kind":"typing","msg":{"id":"1","conv":"world","seq":1}}`,
	} {
		if _, err := DecodePush([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}
