package main

import "testing"

func TestGCPercent(t *testing.T) {
	cfg := func(target string, pct int) Config {
		c := Default()
		c.Target, c.GCPercent = target, pct
		return c
	}
	cases := []struct {
		name    string
		cfg     Config
		environ []string
		want    int
		set     bool
	}{
		{"all keeps the runtime's", cfg("all", 0), nil, 0, false},
		{"gateway alone", cfg("gateway", 0), nil, gatewayGCPercent, true},
		{"several gateways listed", cfg("gateway, gateway", 0), nil, gatewayGCPercent, true},
		{"gateway with logic keeps the runtime's", cfg("gateway,logic", 0), nil, 0, false},
		{"logic keeps the runtime's", cfg("logic", 0), nil, 0, false},
		{"gc_percent wins over the target", cfg("gateway", 80), nil, 80, true},
		{"gc_percent in all mode", cfg("all", 50), nil, 50, true},
		{"GOGC wins over everything", cfg("gateway", 80), []string{"PATH=/bin", "GOGC=200"}, 0, false},
		{"GOGC off wins too", cfg("gateway", 0), []string{"GOGC=off"}, 0, false},
	}
	for _, tc := range cases {
		got, set := gcPercent(tc.cfg, tc.environ)
		if got != tc.want || set != tc.set {
			t.Errorf("%s: gcPercent = %d, %v; want %d, %v", tc.name, got, set, tc.want, tc.set)
		}
	}
	bad := Default()
	bad.GCPercent = -1
	if err := bad.Validate(); err == nil {
		t.Error("gc_percent -1 validated")
	}
}
