// logic holds the business rules. The gateway calls it for every HTTP request and
// every send-message frame. Errors are Kitex biz status errors carrying base.ErrCode.
namespace go logicapi

include "base.thrift"
include "repo.thrift"

struct Session {
    1: string token
    2: i64 user_id
    3: bool is_guest
    4: string token_id
    5: i64 expires_at_ms
}

struct RegisterReq {
    1: string username
    2: string password
}
struct RegisterResp {
    1: repo.User user
}

struct LoginReq {
    1: string username
    2: string password
}
struct LoginResp {
    1: string token
    2: repo.User user
}

struct GuestReq {
    1: string guest_name
}

struct LogoutReq {
    1: string token
}
struct LogoutResp {}

// Verifies a token and that it has not been revoked.
struct AuthReq {
    1: string token
}
struct AuthResp {
    1: Session session
}

// Auth for many tokens at once (a gateway's connect storm): one signature check per
// token and one revocation lookup for all of them. At most 1000 tokens.
struct AuthBatchReq {
    1: list<string> tokens
}
// One token's answer: a session, or the code and message the single Auth fails with
// (UNAUTHORIZED for an invalid, expired or revoked token). OK means session is set.
struct AuthOutcome {
    1: optional Session session
    2: base.ErrCode error_code
    3: string message
}
struct AuthBatchResp {
    1: list<AuthOutcome> results // results[i] answers tokens[i]
}

struct GetUserReq {
    1: i64 user_id
}
struct GetUserResp {
    1: repo.User user
}

struct ConversationView {
    1: repo.Conversation conversation
    2: i64 unread_count
    3: i32 online_count
    4: repo.User peer // single conversations: the other person
}
struct ListConversationsReq {
    1: i64 user_id
}
struct ListConversationsResp {
    1: list<ConversationView> conversations
}

// Paging: page 1 is the newest `size` messages. before_seq / after_seq, when > 0,
// replace page: the newest `size` messages below before_seq, or the oldest `size`
// messages above after_seq. page 0 means cursor mode from after_seq even when it is 0
// (the WebSocket sync frame: everything after seq N, oldest first).
struct ListMessagesReq {
    1: i64 user_id
    2: string conversation_id
    3: i32 page
    4: i32 size
    5: i64 before_seq
    6: i64 after_seq
}
struct ListMessagesResp {
    1: list<repo.Message> messages
    2: i64 total
    3: bool has_more
}

struct MarkReadReq {
    1: i64 user_id
    2: string conversation_id
    3: i64 seq // 0 = latest
}
struct MarkReadResp {
    1: i64 read_seq
}

struct SendReq {
    1: i64 user_id
    2: string conversation_id
    3: string content
    4: i8 type
    5: string client_msg_id
    // The sending socket ("<gatewayID>/<connID>"), excluded from the push; empty for HTTP.
    6: string origin_conn
}
struct SendResp {
    1: repo.Message message
    2: bool duplicate
}

// Send for many messages at once (a gateway's send backlog): each item is checked as
// Send checks it, and the accepted ones are stored in one repo call. Items may target
// different conversations and come from different senders. A failed item is its own
// result; only a failed repo call fails the batch. At most 1000 items.
struct SendBatchReq {
    1: list<SendReq> items
}
// One item's answer: resp, or the code and message the single Send fails with.
// OK means resp is set.
struct SendOutcome {
    1: optional SendResp resp
    2: base.ErrCode error_code
    3: string message
}
struct SendBatchResp {
    1: list<SendOutcome> results // results[i] answers items[i]
}

// ---- users, friends, conversations, groups ----

struct GetUserByNameReq {
    1: string username
}

struct OnlineStatusReq {
    1: i64 user_id
}
struct OnlineStatusResp {
    1: map<i64, bool> online // the caller's friends and 1:1 peers
}

struct Friend {
    1: repo.User user
    2: bool online
}
struct ListFriendsReq {
    1: i64 user_id
}
struct ListFriendsResp {
    1: list<Friend> friends
}

struct AddFriendReq {
    1: i64 user_id
    2: bool is_guest
    3: i64 friend_id
}

struct OpenConversationReq {
    1: i64 user_id
    2: bool is_guest
    3: i64 target_user_id
}
struct OpenConversationResp {
    1: ConversationView conversation
    2: bool created
}

struct GroupMember {
    1: repo.User user
    2: string role
}
struct GroupInfo {
    1: repo.Conversation conversation
    2: list<GroupMember> members
}

struct CreateGroupReq {
    1: i64 user_id
    2: bool is_guest
    3: string name
    4: list<i64> member_ids
}

struct GetGroupReq {
    1: i64 user_id
    2: i64 group_id
}

struct AddGroupMembersReq {
    1: i64 user_id
    2: i64 group_id
    3: list<i64> member_ids
}

struct RemoveGroupMemberReq {
    1: i64 user_id
    2: i64 group_id
    3: i64 target_user_id
}
struct RemoveGroupMemberResp {}

// ---- sockets (gateway → logic) ----

struct ConnectReq {
    1: i64 user_id
    2: string gateway_id
}
struct ConnectResp {}

// Connect for many sockets of one gateway at once, applied in order: one entry per
// socket, so a user may repeat. At most 1000 entries.
struct ConnectBatchReq {
    1: list<i64> user_ids
    2: string gateway_id
}
struct ConnectBatchResp {}

struct DisconnectReq {
    1: i64 user_id
    2: string gateway_id
}
struct DisconnectResp {}

// Disconnect for many sockets of one gateway at once, applied in order: one entry per
// closed socket, so a user may repeat. At most 1000 entries.
struct DisconnectBatchReq {
    1: list<i64> user_ids
    2: string gateway_id
}
struct DisconnectBatchResp {}

struct RefreshRoutesReq {
    1: string gateway_id
    2: list<i64> user_ids
    3: list<i32> counts // the gateway's socket count per user (same length as user_ids)
}
struct RefreshRoutesResp {}

service LogicService {
    // Succeeds when logic and everything it depends on (repo) answer.
    repo.PingResp Ping(1: repo.PingReq req)
    RegisterResp Register(1: RegisterReq req)
    LoginResp Login(1: LoginReq req)
    LoginResp Guest(1: GuestReq req)
    LogoutResp Logout(1: LogoutReq req)
    AuthResp Auth(1: AuthReq req)
    AuthBatchResp AuthBatch(1: AuthBatchReq req)
    GetUserResp GetUser(1: GetUserReq req)
    ListConversationsResp ListConversations(1: ListConversationsReq req)
    ListMessagesResp ListMessages(1: ListMessagesReq req)
    MarkReadResp MarkRead(1: MarkReadReq req)
    SendResp Send(1: SendReq req)
    SendBatchResp SendBatch(1: SendBatchReq req)

    GetUserResp GetUserByName(1: GetUserByNameReq req)
    OnlineStatusResp OnlineStatus(1: OnlineStatusReq req)
    ListFriendsResp ListFriends(1: ListFriendsReq req)
    ConversationView AddFriend(1: AddFriendReq req)
    OpenConversationResp OpenConversation(1: OpenConversationReq req)
    GroupInfo CreateGroup(1: CreateGroupReq req)
    GroupInfo GetGroup(1: GetGroupReq req)
    GroupInfo AddGroupMembers(1: AddGroupMembersReq req)
    RemoveGroupMemberResp RemoveGroupMember(1: RemoveGroupMemberReq req)

    // The gateway reports sockets: presence (friend-online) and push routes follow.
    ConnectResp Connect(1: ConnectReq req)
    ConnectBatchResp ConnectBatch(1: ConnectBatchReq req)
    DisconnectResp Disconnect(1: DisconnectReq req)
    DisconnectBatchResp DisconnectBatch(1: DisconnectBatchReq req)
    RefreshRoutesResp RefreshRoutes(1: RefreshRoutesReq req)
}
