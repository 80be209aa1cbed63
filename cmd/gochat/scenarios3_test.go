package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

type conversation struct {
	ConversationID  string          `json:"conversationId"`
	Type            string          `json:"type"`
	Target          json.RawMessage `json:"target"`
	LastMessage     string          `json:"lastMessage"`
	LastMessageTime string          `json:"lastMessageTime"`
	LastMessageSeq  int64           `json:"lastMessageSeq"`
	UnreadCount     int64           `json:"unreadCount"`
}

func conversations(t *testing.T, api, tok string) map[string]conversation {
	t.Helper()
	var cs []conversation
	call(t, "GET", api+"/conversations", tok, nil).want(t, 200, "").decode(t, &cs)
	if len(cs) == 0 || cs[0].ConversationID != "world" {
		t.Fatalf("conversations %+v: world must come first", cs)
	}
	out := map[string]conversation{}
	for _, c := range cs {
		out[c.ConversationID] = c
	}
	return out
}

func friendsAndSingles(t *testing.T, c *cluster) {
	gw1, gw2 := c.gateways[0], c.gateways[len(c.gateways)-1]
	api := "http://" + gw1 + "/api"
	annTok, ann := login(t, api, "f_ann")
	benTok, ben := login(t, api, "f_ben")
	catTok, cat := login(t, api, "f_cat")

	// Search by exact username, then befriend with the returned id.
	var found user
	call(t, "GET", api+"/users/f_ben", annTok, nil).want(t, 200, "").decode(t, &found)
	if found.UserID != ben.UserID || found.Username != "f_ben" {
		t.Fatalf("GET /users/f_ben = %+v", found)
	}
	call(t, "GET", api+"/users/F_BEN", annTok, nil).want(t, 404, "USER_NOT_FOUND")
	call(t, "GET", api+"/users/nobody_here", annTok, nil).want(t, 404, "USER_NOT_FOUND")
	call(t, "GET", api+"/users/f_ben", "", nil).want(t, 401, "UNAUTHORIZED")

	var added struct {
		Conversation conversation `json:"conversation"`
	}
	call(t, "POST", api+"/friends", annTok, map[string]any{"friendId": ben.UserID}).want(t, 201, "").decode(t, &added)
	single := added.Conversation.ConversationID
	var peer user
	_ = json.Unmarshal(added.Conversation.Target, &peer)
	if added.Conversation.Type != "single" || len(single) != len("single_")+16 || peer.UserID != ben.UserID || peer.Username != "f_ben" {
		t.Fatalf("add friend conversation = %+v target %+v", added.Conversation, peer)
	}
	call(t, "POST", api+"/friends", annTok, map[string]any{"friendId": ben.UserID}).want(t, 409, "ALREADY_FRIENDS")
	call(t, "POST", api+"/friends", benTok, map[string]any{"friendId": ann.UserID}).want(t, 409, "ALREADY_FRIENDS")
	call(t, "POST", api+"/friends", annTok, map[string]any{"friendId": ann.UserID}).want(t, 400, "BAD_REQUEST")
	call(t, "POST", api+"/friends", annTok, map[string]any{"friendId": "123456789"}).want(t, 404, "USER_NOT_FOUND")
	call(t, "POST", api+"/friends", annTok, map[string]any{"friendId": "abc"}).want(t, 400, "BAD_REQUEST")

	// The 1:1 exists for both sides at once, with the other person as target.
	bc := conversations(t, api, benTok)
	_ = json.Unmarshal(bc[single].Target, &peer)
	if bc[single].Type != "single" || peer.UserID != ann.UserID {
		t.Fatalf("ben's conversations lack the 1:1 with ann: %+v", bc)
	}
	var friends []struct {
		UserID, Username string
		Online           bool
	}
	call(t, "GET", api+"/friends", benTok, nil).want(t, 200, "").decode(t, &friends)
	if len(friends) != 1 || friends[0].UserID != ann.UserID || friends[0].Online {
		t.Fatalf("ben's friends = %+v, want ann offline", friends)
	}

	// Chat 1:1 across gateways: ann's other socket and ben get it, the sender's socket does not.
	a1, a2, b := dial(t, gw1, annTok), dial(t, gw2, annTok), dial(t, gw2, benTok)
	ak := a1.sendTo(t, single, "hi ben", "s1")
	for name, w := range map[string]*wsClient{"ann#2": a2, "ben": b} {
		if m := w.expectMessage(t); m.MessageID != ak.MessageID || m.ConversationID != single || m.SeqID != 1 {
			t.Fatalf("%s got %+v", name, m)
		}
	}
	bk := b.sendTo(t, single, "hi ann", "s2")
	for name, w := range map[string]*wsClient{"ann#1": a1, "ann#2": a2} {
		if m := w.expectMessage(t); m.MessageID != bk.MessageID || m.SeqID != 2 {
			t.Fatalf("%s got %+v, want ben's reply (and not its own message)", name, m)
		}
	}
	if u := conversations(t, api, benTok)[single].UnreadCount; u != 0 {
		t.Fatalf("ben's unread after replying = %d, want 0", u)
	}
	ak = a1.sendTo(t, single, "one more", "s3")
	b.expectMessage(t)
	a2.expectMessage(t)
	if cv := conversations(t, api, benTok)[single]; cv.UnreadCount != 1 || cv.LastMessage != "one more" || cv.LastMessageSeq != 3 {
		t.Fatalf("ben's 1:1 = %+v, want unread 1 and the last message", cv)
	}
	call(t, "PUT", api+"/conversations/"+single+"/read", benTok, map[string]any{"seqId": ak.SeqID}).want(t, 200, "")
	if u := conversations(t, api, benTok)[single].UnreadCount; u != 0 {
		t.Fatalf("ben's unread after read = %d", u)
	}
	var online map[string]bool
	call(t, "GET", api+"/users/status/online", benTok, nil).want(t, 200, "").decode(t, &online)
	if !online[ann.UserID] || len(online) != 1 {
		t.Fatalf("ben's online map = %v, want ann online", online)
	}

	// Outsiders see nothing of it.
	call(t, "GET", api+"/conversations/"+single+"/messages", catTok, nil).want(t, 403, "NOT_MEMBER")
	call(t, "PUT", api+"/conversations/"+single+"/read", catTok, nil).want(t, 403, "NOT_MEMBER")
	call(t, "POST", api+"/messages", catTok, map[string]any{"conversationId": single, "content": "let me in"}).want(t, 403, "NOT_MEMBER")
	cw := dial(t, gw1, catTok)
	cw.send(t, "send-message", map[string]any{"conversationId": single, "content": "x", "tempMessageId": "c1"})
	if f := cw.expect(t, "error"); !contains(f.Data, "NOT_MEMBER") || !contains(f.Data, `"tempMessageId":"c1"`) {
		t.Fatalf("non-member send error = %s", f.Data)
	}
	cw.send(t, "sync", map[string]any{"conversationId": single, "afterSeq": 0})
	if f := cw.expect(t, "error"); !contains(f.Data, "NOT_MEMBER") {
		t.Fatalf("non-member sync error = %s", f.Data)
	}

	// Anyone can open a 1:1 with anyone: 201 the first time, 200 after.
	var opened conversation
	call(t, "POST", api+"/conversations", catTok, map[string]any{"targetUserId": ann.UserID}).want(t, 201, "").decode(t, &opened)
	call(t, "POST", api+"/conversations", annTok, map[string]any{"targetUserId": cat.UserID}).want(t, 200, "")
	call(t, "POST", api+"/conversations", catTok, map[string]any{"targetUserId": cat.UserID}).want(t, 400, "BAD_REQUEST")
	call(t, "POST", api+"/conversations", catTok, map[string]any{"targetUserId": "42"}).want(t, 404, "USER_NOT_FOUND")
	ck := cw.sendTo(t, opened.ConversationID, "hello ann, from cat", "c2")
	for _, w := range []*wsClient{a1, a2} {
		if m := w.expectMessage(t); m.MessageID != ck.MessageID {
			t.Fatalf("ann got %+v, want cat's message", m)
		}
	}
	// History of the 1:1, oldest→newest.
	var hist []message
	call(t, "GET", api+"/conversations/"+single+"/messages", annTok, nil).want(t, 200, "").decode(t, &hist)
	if len(hist) != 3 || hist[0].Content != "hi ben" || hist[2].Content != "one more" {
		t.Fatalf("1:1 history = %+v", hist)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

type group struct {
	GroupID     string `json:"groupId"`
	GroupName   string `json:"groupName"`
	OwnerID     string `json:"ownerId"`
	MemberCount int    `json:"memberCount"`
	Members     []struct {
		UserID, Username, Role string
	} `json:"members"`
}

func groups(t *testing.T, c *cluster) {
	gw1, gw2 := c.gateways[0], c.gateways[len(c.gateways)-1]
	api := "http://" + gw1 + "/api"
	toks := make([]string, 5)
	us := make([]user, 5)
	for i := range 5 {
		toks[i], us[i] = login(t, api, fmt.Sprint("g_user", i))
	}
	var created struct {
		Group        group `json:"group"`
		Conversation struct {
			ConversationID, Type string
		} `json:"conversation"`
	}
	call(t, "POST", api+"/groups", toks[0], map[string]any{
		"groupName": "Team 五", "members": []any{us[1].UserID, us[2].UserID, us[3].UserID, "987654321", "not-an-id", us[1].UserID},
	}).want(t, 201, "").decode(t, &created)
	g := created.Group
	conv := created.Conversation.ConversationID
	if conv != "group_"+g.GroupID || created.Conversation.Type != "group" || g.MemberCount != 4 || g.OwnerID != us[0].UserID || g.GroupName != "Team 五" {
		t.Fatalf("created = %+v", created)
	}
	call(t, "POST", api+"/groups", toks[0], map[string]any{"groupName": "", "members": []any{}}).want(t, 400, "BAD_REQUEST")

	var info group
	call(t, "GET", api+"/groups/"+g.GroupID, toks[1], nil).want(t, 200, "").decode(t, &info)
	roles := map[string]string{}
	for _, m := range info.Members {
		roles[m.UserID] = m.Role
	}
	if len(info.Members) != 4 || roles[us[0].UserID] != "owner" || roles[us[1].UserID] != "member" {
		t.Fatalf("group info = %+v", info)
	}
	call(t, "GET", api+"/groups/"+g.GroupID, toks[4], nil).want(t, 403, "NOT_MEMBER")
	call(t, "GET", api+"/groups/123", toks[0], nil).want(t, 404, "NOT_FOUND")
	call(t, "GET", api+"/groups/abc", toks[0], nil).want(t, 404, "NOT_FOUND")
	call(t, "POST", api+"/groups/"+g.GroupID+"/members", toks[1], map[string]any{"memberIds": []string{us[4].UserID}}).want(t, 403, "FORBIDDEN")
	call(t, "POST", api+"/groups/"+g.GroupID+"/members", toks[0], map[string]any{"memberIds": []string{us[4].UserID, "55555"}}).want(t, 200, "").decode(t, &info)
	if info.MemberCount != 5 || len(info.Members) != 5 {
		t.Fatalf("after adding: %+v", info)
	}
	// The group shows up for every member.
	for i := range 5 {
		cv, ok := conversations(t, api, toks[i])[conv]
		var target struct {
			GroupID, GroupName string
			MemberCount        int
		}
		_ = json.Unmarshal(cv.Target, &target)
		if !ok || cv.Type != "group" || target.GroupID != g.GroupID || target.MemberCount != 5 {
			t.Fatalf("user %d: group conversation %+v ok=%v", i, cv, ok)
		}
	}

	ws := make([]*wsClient, 5)
	for i := range 5 {
		ws[i] = dial(t, []string{gw1, gw2}[i%2], toks[i])
	}
	k := ws[2].sendTo(t, conv, "hello team", "g1")
	for i, w := range ws {
		if i == 2 {
			continue
		}
		if m := w.expectMessage(t); m.MessageID != k.MessageID {
			t.Fatalf("member %d got %+v", i, m)
		}
	}
	if u := conversations(t, api, toks[3])[conv].UnreadCount; u != 1 {
		t.Fatalf("member 3 unread = %d, want 1", u)
	}
	ws[3].send(t, "read", map[string]any{"conversationId": conv, "seqId": k.SeqID})
	ws[3].send(t, "ping", nil)
	ws[3].expect(t, "pong")
	if u := conversations(t, api, toks[3])[conv].UnreadCount; u != 0 {
		t.Fatalf("member 3 unread after read = %d, want 0", u)
	}

	// Removal takes effect at once: no reads, no sends, no deliveries.
	call(t, "DELETE", api+"/groups/"+g.GroupID+"/members/"+us[0].UserID, toks[1], nil).want(t, 403, "FORBIDDEN")
	call(t, "DELETE", api+"/groups/"+g.GroupID+"/members/"+us[3].UserID, toks[0], nil).want(t, 200, "")
	call(t, "GET", api+"/conversations/"+conv+"/messages", toks[3], nil).want(t, 403, "NOT_MEMBER")
	if _, ok := conversations(t, api, toks[3])[conv]; ok {
		t.Fatal("removed member still lists the group")
	}
	k2 := ws[1].sendTo(t, conv, "after removal", "g2")
	if m := ws[0].expectMessage(t); m.MessageID != k2.MessageID {
		t.Fatalf("owner got %+v", m)
	}
	marker := ws[0].sendText(t, "world marker", "g3")
	// Members still in the group get the group message and the marker; the removed
	// member's next message is the marker alone. The marker is a world message: in
	// the split topology it travels on the broadcast topic, the group message on the
	// gateways' own topics, and a gateway may take either first, so only the removed
	// member's order is asserted (the group message was published before the marker
	// was sent: the owner already had it).
	want := map[int][]string{1: {marker.MessageID}, 2: {k2.MessageID, marker.MessageID}, 3: {marker.MessageID}, 4: {k2.MessageID, marker.MessageID}}
	for i, ids := range want {
		var got []string
		for range ids {
			got = append(got, ws[i].expectMessage(t).MessageID)
		}
		if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(ids))) {
			t.Fatalf("member %d got messages %v, want %v", i, got, ids)
		}
	}
	// Leaving is a self-removal; the owner leaving hands the group on.
	call(t, "DELETE", api+"/groups/"+g.GroupID+"/members/"+us[4].UserID, toks[4], nil).want(t, 200, "")
	call(t, "DELETE", api+"/groups/"+g.GroupID+"/members/"+us[0].UserID, toks[0], nil).want(t, 200, "")
	call(t, "GET", api+"/groups/"+g.GroupID, toks[1], nil).want(t, 200, "").decode(t, &info)
	if info.MemberCount != 2 || info.OwnerID == us[0].UserID || info.OwnerID == "" {
		t.Fatalf("after leaving: %+v", info)
	}
}

func presence(t *testing.T, c *cluster) {
	gw1, gw2 := c.gateways[0], c.gateways[len(c.gateways)-1]
	api := "http://" + gw1 + "/api"
	aTok, _ := login(t, api, "p_watcher")
	bTok, b := login(t, api, "p_friend")
	call(t, "POST", api+"/friends", aTok, map[string]any{"friendId": b.UserID}).want(t, 201, "")
	watcher := dial(t, gw1, aTok)
	b1 := dial(t, gw2, bTok)
	watcher.expectPresence(t, b.UserID, true)
	b2 := dial(t, gw1, bTok) // a second socket is not news
	_ = b1.c.Close()
	_ = b2.c.Close()
	watcher.expectPresence(t, b.UserID, false)
	if len(watcher.presence) != 0 {
		t.Fatalf("extra presence frames: %+v", watcher.presence)
	}
	var online map[string]bool
	call(t, "GET", api+"/users/status/online", aTok, nil).want(t, 200, "").decode(t, &online)
	if on, ok := online[b.UserID]; !ok || on {
		t.Fatalf("online map = %v, want p_friend offline", online)
	}
}

func guests(t *testing.T, c *cluster) {
	gw := c.gateways[0]
	api := "http://" + gw + "/api"
	var g struct {
		Token string `json:"token"`
		User  user   `json:"user"`
	}
	call(t, "POST", api+"/auth/guest", "", map[string]string{"guestName": ""}).want(t, 200, "").decode(t, &g)
	hostTok, host := login(t, api, "q_host")
	call(t, "POST", api+"/friends", g.Token, map[string]any{"friendId": host.UserID}).want(t, 403, "GUEST_NOT_ALLOWED")
	call(t, "POST", api+"/groups", g.Token, map[string]any{"groupName": "nope", "members": []string{}}).want(t, 403, "GUEST_NOT_ALLOWED")
	call(t, "POST", api+"/conversations", g.Token, map[string]any{"targetUserId": host.UserID}).want(t, 403, "GUEST_NOT_ALLOWED")
	var info user
	call(t, "GET", api+"/user/info", g.Token, nil).want(t, 200, "").decode(t, &info)
	if !info.IsGuest {
		t.Fatalf("guest info = %+v", info)
	}
	// Others may start a 1:1 with a guest, and the guest answers.
	var cv conversation
	call(t, "POST", api+"/conversations", hostTok, map[string]any{"targetUserId": g.User.UserID}).want(t, 201, "").decode(t, &cv)
	gw1 := dial(t, gw, g.Token)
	hw := dial(t, gw, hostTok)
	k := hw.sendTo(t, cv.ConversationID, "welcome, guest", "q1")
	if m := gw1.expectMessage(t); m.MessageID != k.MessageID {
		t.Fatalf("guest got %+v", m)
	}
	r := gw1.sendTo(t, cv.ConversationID, "thanks!", "q2")
	if m := hw.expectMessage(t); m.MessageID != r.MessageID {
		t.Fatalf("host got %+v", m)
	}
	if _, ok := conversations(t, api, g.Token)[cv.ConversationID]; !ok {
		t.Fatal("guest does not list the 1:1 started with them")
	}
}
