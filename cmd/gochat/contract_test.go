package main

import (
	"strings"
	"testing"
)

// TestContractTable checks every endpoint of contract.md §3 for each way it can
// answer: ok, 401 (no/garbage token), 403 (authenticated but not allowed), 400 (bad
// input), 404 (unknown resource), 409 — status, success flag and error code.
func TestContractTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a topology")
	}
	c := startAll(t)
	gw := c.gateways[0]
	api := "http://" + gw + "/api"

	aliceTok, alice := login(t, api, "ct_alice")
	bobTok, bob := login(t, api, "ct_bob")
	carolTok, carol := login(t, api, "ct_carol")
	var g struct {
		Token string `json:"token"`
		User  user   `json:"user"`
	}
	call(t, "POST", api+"/auth/guest", "", map[string]string{"guestName": "ct_guest"}).want(t, 200, "").decode(t, &g)
	var added struct {
		Conversation conversation `json:"conversation"`
	}
	call(t, "POST", api+"/friends", aliceTok, map[string]any{"friendId": bob.UserID}).want(t, 201, "").decode(t, &added)
	single := added.Conversation.ConversationID
	var created struct {
		Group group `json:"group"`
	}
	call(t, "POST", api+"/groups", aliceTok, map[string]any{"groupName": "ct", "members": []string{bob.UserID}}).want(t, 201, "").decode(t, &created)
	gid := created.Group.GroupID

	toks := map[string]string{"": "", "garbage": "not.a.token", "alice": aliceTok, "bob": bobTok, "carol": carolTok, "guest": g.Token}
	expand := func(s string) string {
		return strings.NewReplacer("{single}", single, "{gid}", gid, "{alice}", alice.UserID, "{bob}", bob.UserID,
			"{carol}", carol.UserID, "{guest}", g.User.UserID).Replace(s)
	}
	tests := []struct {
		name, method, path, as string
		body                   any
		status                 int
		code                   string
	}{
		{"register ok", "POST", "/auth/register", "", `{"username":"ct_dave","password":"secret1"}`, 201, ""},
		{"register taken", "POST", "/auth/register", "", `{"username":"ct_dave","password":"secret1"}`, 409, "USERNAME_TAKEN"},
		{"register bad name", "POST", "/auth/register", "", `{"username":"a b","password":"secret1"}`, 400, "INVALID_USERNAME"},
		{"register bad password", "POST", "/auth/register", "", `{"username":"ct_erin","password":"123"}`, 400, "INVALID_PASSWORD"},
		{"register malformed", "POST", "/auth/register", "", `{`, 400, "BAD_REQUEST"},
		{"register missing fields", "POST", "/auth/register", "", `{}`, 400, "BAD_REQUEST"},
		{"login ok", "POST", "/auth/login", "", `{"username":"ct_dave","password":"secret1"}`, 200, ""},
		{"login wrong", "POST", "/auth/login", "", `{"username":"ct_dave","password":"secret2"}`, 401, "INVALID_CREDENTIALS"},
		{"login unknown", "POST", "/auth/login", "", `{"username":"ct_zed","password":"secret2"}`, 401, "INVALID_CREDENTIALS"},
		{"login malformed", "POST", "/auth/login", "", `[]`, 400, "BAD_REQUEST"},
		{"guest ok", "POST", "/auth/guest", "", `{"guestName":""}`, 200, ""},
		{"guest bad name", "POST", "/auth/guest", "", `{"guestName":"x y"}`, 400, "INVALID_USERNAME"},
		{"guest taken", "POST", "/auth/guest", "", `{"guestName":"ct_alice"}`, 409, "USERNAME_TAKEN"},
		{"logout anonymous", "POST", "/auth/logout", "", nil, 200, ""},
		{"logout garbage", "POST", "/auth/logout", "garbage", nil, 200, ""},
		{"users/info ok", "GET", "/users/info", "alice", nil, 200, ""},
		{"users/info 401", "GET", "/users/info", "", nil, 401, "UNAUTHORIZED"},
		{"user/info ok", "GET", "/user/info", "guest", nil, 200, ""},
		{"user/info 401", "GET", "/user/info", "garbage", nil, 401, "UNAUTHORIZED"},
		{"find user ok", "GET", "/users/ct_bob", "alice", nil, 200, ""},
		{"find user 404", "GET", "/users/ct_nobody", "alice", nil, 404, "USER_NOT_FOUND"},
		{"find user 401", "GET", "/users/ct_bob", "", nil, 401, "UNAUTHORIZED"},
		{"online ok", "GET", "/users/status/online", "alice", nil, 200, ""},
		{"online 401", "GET", "/users/status/online", "", nil, 401, "UNAUTHORIZED"},
		{"friends ok", "GET", "/friends", "alice", nil, 200, ""},
		{"friends 401", "GET", "/friends", "garbage", nil, 401, "UNAUTHORIZED"},
		{"add friend ok", "POST", "/friends", "carol", `{"friendId":"{alice}"}`, 201, ""},
		{"add friend again", "POST", "/friends", "alice", `{"friendId":"{carol}"}`, 409, "ALREADY_FRIENDS"},
		{"add friend self", "POST", "/friends", "alice", `{"friendId":"{alice}"}`, 400, "BAD_REQUEST"},
		{"add friend bad id", "POST", "/friends", "alice", `{"friendId":"x"}`, 400, "BAD_REQUEST"},
		{"add friend unknown", "POST", "/friends", "alice", `{"friendId":"77"}`, 404, "USER_NOT_FOUND"},
		{"add friend guest", "POST", "/friends", "guest", `{"friendId":"{alice}"}`, 403, "GUEST_NOT_ALLOWED"},
		{"add friend 401", "POST", "/friends", "", `{"friendId":"{alice}"}`, 401, "UNAUTHORIZED"},
		{"conversations ok", "GET", "/conversations", "bob", nil, 200, ""},
		{"conversations 401", "GET", "/conversations", "", nil, 401, "UNAUTHORIZED"},
		{"open 1:1 created", "POST", "/conversations", "bob", `{"targetUserId":"{carol}"}`, 201, ""},
		{"open 1:1 existing", "POST", "/conversations", "alice", `{"targetUserId":"{bob}"}`, 200, ""},
		{"open 1:1 with guest", "POST", "/conversations", "alice", `{"targetUserId":"{guest}"}`, 201, ""},
		{"open 1:1 as guest", "POST", "/conversations", "guest", `{"targetUserId":"{alice}"}`, 403, "GUEST_NOT_ALLOWED"},
		{"open 1:1 unknown", "POST", "/conversations", "alice", `{"targetUserId":"77"}`, 404, "USER_NOT_FOUND"},
		{"open 1:1 bad", "POST", "/conversations", "alice", `{"targetUserId":true}`, 400, "BAD_REQUEST"},
		{"open 1:1 401", "POST", "/conversations", "", `{"targetUserId":"{bob}"}`, 401, "UNAUTHORIZED"},
		{"history world", "GET", "/conversations/world/messages", "guest", nil, 200, ""},
		{"history 1:1", "GET", "/conversations/{single}/messages?page=1&size=10", "bob", nil, 200, ""},
		{"history 401", "GET", "/conversations/world/messages", "", nil, 401, "UNAUTHORIZED"},
		{"history not member", "GET", "/conversations/{single}/messages", "carol", nil, 403, "NOT_MEMBER"},
		{"history group not member", "GET", "/conversations/group_{gid}/messages", "carol", nil, 403, "NOT_MEMBER"},
		{"history bad id", "GET", "/conversations/nope/messages", "alice", nil, 400, "INVALID_CONVERSATION"},
		{"history bad page", "GET", "/conversations/world/messages?page=0", "alice", nil, 400, "BAD_REQUEST"},
		{"history bad size", "GET", "/conversations/world/messages?size=-1", "alice", nil, 400, "BAD_REQUEST"},
		{"history unknown", "GET", "/conversations/group_12345/messages", "alice", nil, 404, "CONVERSATION_NOT_FOUND"},
		{"read world", "PUT", "/conversations/world/read", "guest", nil, 200, ""},
		{"read 1:1", "PUT", "/conversations/{single}/read", "alice", `{"seqId":0}`, 200, ""},
		{"read 401", "PUT", "/conversations/world/read", "", nil, 401, "UNAUTHORIZED"},
		{"read not member", "PUT", "/conversations/{single}/read", "carol", nil, 403, "NOT_MEMBER"},
		{"read unknown", "PUT", "/conversations/single_0000000000000000/read", "alice", nil, 404, "CONVERSATION_NOT_FOUND"},
		{"read bad body", "PUT", "/conversations/world/read", "alice", `{"seqId":"x"}`, 400, "BAD_REQUEST"},
		{"create group ok", "POST", "/groups", "bob", `{"groupName":"g2","members":["{carol}","999"]}`, 201, ""},
		{"create group guest", "POST", "/groups", "guest", `{"groupName":"g3","members":[]}`, 403, "GUEST_NOT_ALLOWED"},
		{"create group bad name", "POST", "/groups", "bob", `{"groupName":"","members":[]}`, 400, "BAD_REQUEST"},
		{"create group 401", "POST", "/groups", "", `{"groupName":"g","members":[]}`, 401, "UNAUTHORIZED"},
		{"group info ok", "GET", "/groups/{gid}", "bob", nil, 200, ""},
		{"group info not member", "GET", "/groups/{gid}", "carol", nil, 403, "NOT_MEMBER"},
		{"group info unknown", "GET", "/groups/12345", "alice", nil, 404, "NOT_FOUND"},
		{"group info 401", "GET", "/groups/{gid}", "", nil, 401, "UNAUTHORIZED"},
		{"add members not admin", "POST", "/groups/{gid}/members", "bob", `{"memberIds":["{carol}"]}`, 403, "FORBIDDEN"},
		{"add members outsider", "POST", "/groups/{gid}/members", "carol", `{"memberIds":["{carol}"]}`, 403, "NOT_MEMBER"},
		{"add members unknown group", "POST", "/groups/12345/members", "alice", `{"memberIds":[]}`, 404, "NOT_FOUND"},
		{"add members malformed", "POST", "/groups/{gid}/members", "alice", `{"memberIds":`, 400, "BAD_REQUEST"},
		{"add members ok", "POST", "/groups/{gid}/members", "alice", `{"memberIds":["{carol}"]}`, 200, ""},
		{"add members 401", "POST", "/groups/{gid}/members", "", `{"memberIds":[]}`, 401, "UNAUTHORIZED"},
		{"remove member not admin", "DELETE", "/groups/{gid}/members/{carol}", "bob", nil, 403, "FORBIDDEN"},
		{"remove member not in group", "DELETE", "/groups/{gid}/members/{guest}", "alice", nil, 404, "NOT_FOUND"},
		{"remove member unknown group", "DELETE", "/groups/12345/members/{bob}", "alice", nil, 404, "NOT_FOUND"},
		{"remove member ok", "DELETE", "/groups/{gid}/members/{carol}", "alice", nil, 200, ""},
		{"leave ok", "DELETE", "/groups/{gid}/members/{bob}", "bob", nil, 200, ""},
		{"remove member 401", "DELETE", "/groups/{gid}/members/{bob}", "", nil, 401, "UNAUTHORIZED"},
		{"send world", "POST", "/messages", "guest", `{"conversationId":"world","content":"hi"}`, 201, ""},
		{"send 1:1", "POST", "/messages", "bob", `{"conversationId":"{single}","content":"hi","type":"text"}`, 201, ""},
		{"send not member", "POST", "/messages", "carol", `{"conversationId":"{single}","content":"hi"}`, 403, "NOT_MEMBER"},
		{"send unknown", "POST", "/messages", "alice", `{"conversationId":"group_12345","content":"hi"}`, 404, "CONVERSATION_NOT_FOUND"},
		{"send bad type", "POST", "/messages", "alice", `{"conversationId":"world","content":"hi","type":"video"}`, 400, "INVALID_MESSAGE_TYPE"},
		{"send empty", "POST", "/messages", "alice", `{"conversationId":"world","content":" "}`, 400, "CONTENT_EMPTY"},
		{"send 401", "POST", "/messages", "", `{"conversationId":"world","content":"hi"}`, 401, "UNAUTHORIZED"},
		{"unknown route", "GET", "/nothing/here", "alice", nil, 404, "NOT_FOUND"},
		{"wrong method", "DELETE", "/conversations", "alice", nil, 405, "METHOD_NOT_ALLOWED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if s, ok := body.(string); ok {
				body = expand(s)
			}
			r := call(t, tt.method, api+expand(tt.path), toks[tt.as], body)
			r.want(t, tt.status, tt.code)
			if tt.status >= 400 && r.Env.Message == "" {
				t.Fatal("error envelope without a message")
			}
		})
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		call(t, "GET", "http://"+gw+p, "", nil).want(t, 200, "")
	}
}
