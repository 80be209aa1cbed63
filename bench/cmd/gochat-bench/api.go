package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// api talks to one gateway's HTTP API (contract.md §3) for the setup of a run:
// accounts, tokens and conversations. Runs never measure it.
type api struct {
	base string // http://host:port
	hc   *http.Client
}

func newAPI(base string) *api {
	return &api{base: base, hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// account is a user the harness logged in.
type account struct {
	ID    string // snowflake, as the wire spells it
	Token string
}

// call sends one JSON request and decodes the envelope's data into out (may be nil).
func (a *api) call(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+"/api"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	var env struct {
		Success bool            `json:"success"`
		Message string          `json:"message"`
		Code    string          `json:"code"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&env); err != nil {
		return fmt.Errorf("%s %s: status %d: %w", method, path, resp.StatusCode, err)
	}
	if !env.Success {
		return fmt.Errorf("%s %s: status %d %s: %s", method, path, resp.StatusCode, env.Code, env.Message)
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return fmt.Errorf("%s %s: data: %w", method, path, err)
		}
	}
	return nil
}

type loginData struct {
	Token string `json:"token"`
	User  struct {
		UserID string `json:"userId"`
	} `json:"user"`
}

// guest creates a guest account (no password hashing: cheap).
func (a *api) guest(ctx context.Context) (account, error) {
	var d loginData
	if err := a.call(ctx, http.MethodPost, "/auth/guest", "", map[string]string{"guestName": ""}, &d); err != nil {
		return account{}, err
	}
	return account{ID: d.User.UserID, Token: d.Token}, nil
}

// member registers and logs in a full account, needed to start 1:1 chats and groups.
// Its cost is one bcrypt hash each way: run gochat with a low logic.bcrypt_cost for
// benchmarks (scripts/bench.sh does).
func (a *api) member(ctx context.Context, name string) (account, error) {
	cred := map[string]string{"username": name, "password": "bench-password"}
	if err := a.call(ctx, http.MethodPost, "/auth/register", "", cred, nil); err != nil {
		return account{}, err
	}
	var d loginData
	if err := a.call(ctx, http.MethodPost, "/auth/login", "", cred, &d); err != nil {
		return account{}, err
	}
	return account{ID: d.User.UserID, Token: d.Token}, nil
}

// direct opens (or finds) the 1:1 conversation between from and target.
func (a *api) direct(ctx context.Context, from account, targetID string) (string, error) {
	var c struct {
		ConversationID string `json:"conversationId"`
	}
	if err := a.call(ctx, http.MethodPost, "/conversations", from.Token, map[string]string{"targetUserId": targetID}, &c); err != nil {
		return "", err
	}
	return c.ConversationID, nil
}

// group creates a group owned by owner with the given members.
func (a *api) group(ctx context.Context, owner account, name string, members []string) (string, error) {
	var g struct {
		Conversation struct {
			ConversationID string `json:"conversationId"`
		} `json:"conversation"`
	}
	if err := a.call(ctx, http.MethodPost, "/groups", owner.Token, map[string]any{"groupName": name, "members": members}, &g); err != nil {
		return "", err
	}
	return g.Conversation.ConversationID, nil
}

// minter signs tokens with the deployment's secret (a bench-only shortcut given with
// -secret): HS256, issuer "gochat", subject = user id, as logic/authtoken issues them.
// Minted users need not exist: sockets, routes and the world room work on the id alone.
type minter struct{ secret []byte }

func newMinter(secret string) (*minter, error) {
	if len(secret) < 16 {
		return nil, errors.New("-secret must be the gateway's auth.secret (at least 16 bytes)")
	}
	return &minter{secret: []byte(secret)}, nil
}

func (m *minter) token(uid int64) (string, error) {
	var id [12]byte
	_, _ = rand.Read(id[:])
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer:    "gochat",
		Subject:   strconv.FormatInt(uid, 10),
		ID:        hex.EncodeToString(id[:]),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(24 * time.Hour)),
	}).SignedString(m.secret)
}
