// repo owns storage: MySQL (or SQLite) through gorm and Redis (or in-process state).
// Times are unix milliseconds; ids are snowflakes.
namespace go repoapi

include "base.thrift"

struct User {
    1: i64 id
    2: string username
    3: string avatar
    4: bool is_guest
    5: i64 created_at_ms
}

struct Message {
    1: i64 id
    2: string conversation_id
    3: i64 seq
    4: i64 sender_id
    5: string sender_name
    6: i8 type
    7: string content
    8: string client_msg_id
    9: i64 created_at_ms
}

struct Conversation {
    1: string id
    2: string type
    3: string name
    4: string avatar
    5: i64 owner_id
    6: i32 member_count
    7: i64 last_seq
    8: i64 last_message_id
    9: string last_message_preview
    10: i64 last_message_at_ms
}

// repo assigns the snowflake id.
struct CreateUserReq {
    2: string username
    3: string password_hash
    4: bool is_guest
}
struct CreateUserResp {
    1: User user
}

struct GetUserByNameReq {
    1: string username
}
struct GetUserByNameResp {
    1: User user
    2: string password_hash
}

struct GetUsersReq {
    1: list<i64> ids
}
struct GetUsersResp {
    1: list<User> users
}

struct AppendReq {
    1: Message message // id, seq and created_at_ms are assigned by repo
}
struct AppendResp {
    1: Message message
    // true when (sender_id, client_msg_id) was already stored: message is that stored row.
    2: bool duplicate
}

// Append for many messages at once (a logic's send backlog): they join one group
// commit, so each conversation's seqs stay gap-free across the batch. A message's
// failure is its own result; a client_msg_id repeated within the batch or already
// stored is a duplicate, as with single Appends. At most 1000 messages.
struct AppendBatchReq {
    1: list<Message> messages
    // Users whose routes the answer should carry, read once the batch is stored (the
    // recipients the caller already knows): the push then needs no GetRoutes.
    2: list<i64> route_users
}
// One message's answer: resp, or the code and message the single Append fails with
// (NOT_FOUND for a missing conversation, BAD_REQUEST for an invalid message). OK
// means resp is set.
struct AppendOutcome {
    1: optional AppendResp resp
    2: base.ErrCode error_code
    3: string message
}
struct AppendBatchResp {
    1: list<AppendOutcome> results // results[i] answers messages[i]
    // route_users' gateways as GetRoutes answers them, read after the commit; unset
    // when route_users was empty or the read failed (the caller asks GetRoutes).
    2: optional map<i64, list<string>> routes
}

// Messages of one conversation with from_seq <= seq <= to_seq, ascending by seq.
struct ListMessagesReq {
    1: string conversation_id
    2: i64 from_seq
    3: i64 to_seq
}
struct ListMessagesResp {
    1: list<Message> messages
}

struct GetConversationReq {
    1: string conversation_id
    2: i64 user_id // when non-zero, read_seq is the user's read pointer
}
struct GetConversationResp {
    1: Conversation conversation
    2: i64 read_seq
}

struct UserConversation {
    1: Conversation conversation
    2: i64 read_seq
    3: i64 peer_id // single conversations: the other member
}
struct ListUserConversationsReq {
    1: i64 user_id
}
struct ListUserConversationsResp {
    1: list<UserConversation> conversations
}

// Moves the read pointer forward only (max(current, seq)).
struct SetReadSeqReq {
    1: string conversation_id
    2: i64 user_id
    3: i64 seq
}
struct SetReadSeqResp {
    1: i64 read_seq
}

struct RevokeTokenReq {
    1: string token_id
    2: i64 expires_at_ms
}
struct RevokeTokenResp {}

struct IsRevokedReq {
    1: string token_id
}
struct IsRevokedResp {
    1: bool revoked
}

// IsRevoked for many token ids in one round trip. At most 1000 ids.
struct IsRevokedBatchReq {
    1: list<string> token_ids
}
struct IsRevokedBatchResp {
    1: list<bool> revoked // revoked[i] answers token_ids[i]
}

// ---- friends and conversations ----

struct Member {
    1: i64 user_id
    2: string role // owner | admin | member
    3: i64 read_seq
    4: i64 joined_at_ms
}

// Makes user and friend friends both ways and ensures their single conversation
// (conversation_id) exists with both as members. CONFLICT when already friends,
// NOT_FOUND when either user does not exist.
struct AddFriendReq {
    1: i64 user_id
    2: i64 friend_id
    3: string conversation_id
}
struct AddFriendResp {
    1: Conversation conversation
}

struct ListFriendsReq {
    1: i64 user_id
}
struct ListFriendsResp {
    1: list<User> friends
}

// Ensures the single conversation between two users exists with both as members.
struct EnsureSingleReq {
    1: string conversation_id
    2: i64 user_a
    3: i64 user_b
}
struct EnsureSingleResp {
    1: Conversation conversation
    2: bool created
}

// Creates group_<snowflake> with owner_id as owner and the existing users among
// member_ids as members (unknown ids are skipped).
struct CreateGroupReq {
    1: string name
    2: i64 owner_id
    3: list<i64> member_ids
}
struct CreateGroupResp {
    1: Conversation conversation
}

struct GetMemberReq {
    1: string conversation_id
    2: i64 user_id
}
struct GetMemberResp {
    1: bool found
    2: Member member
}

// Members ordered by user id, after_user_id exclusive; limit <= 1000.
struct ListMembersReq {
    1: string conversation_id
    2: i64 after_user_id
    3: i32 limit
}
struct ListMembersResp {
    1: list<Member> members
}

// Adds the existing users among user_ids as members (already-members and unknown ids
// are skipped); member_count is kept up to date.
struct AddMembersReq {
    1: string conversation_id
    2: list<i64> user_ids
}
struct AddMembersResp {
    1: list<i64> added
    2: Conversation conversation
}

// Removes a member. When the owner leaves, the longest-standing remaining member
// becomes owner.
struct RemoveMemberReq {
    1: string conversation_id
    2: i64 user_id
}
struct RemoveMemberResp {
    1: bool removed
    2: Conversation conversation
}

// Friends and 1:1 peers of a user: who sees their presence.
struct ListPeersReq {
    1: i64 user_id
}
struct ListPeersResp {
    1: list<i64> user_ids
}

// ListPeers for many users in one query: the presence changes of a connect storm.
// peers[u] lists u's peers ascending; users without peers are absent. At most 1000.
struct ListPeersBatchReq {
    1: list<i64> user_ids
}
struct ListPeersBatchResp {
    1: map<i64, list<i64>> peers
}

// ---- routes and presence (volatile state) ----

// One more socket of user on gateway. first: the user had no socket anywhere before.
struct ConnectReq {
    1: i64 user_id
    2: string gateway_id
}
struct ConnectResp {
    1: bool first
}

// Connect for many sockets on one gateway, applied in order: one entry per socket (a
// user may repeat). first[i]: user_ids[i]'s socket was the user's first anywhere, so
// a user repeated in one batch is first at most at its first occurrence. At most 1000
// entries.
struct ConnectBatchReq {
    1: list<i64> user_ids
    2: string gateway_id
}
struct ConnectBatchResp {
    1: list<bool> first
}

// One socket fewer. last: the user has no socket anywhere now.
struct DisconnectReq {
    1: i64 user_id
    2: string gateway_id
}
struct DisconnectResp {
    1: bool last
}

// Disconnect for many sockets on one gateway, applied in order: one entry per closed
// socket (a user may repeat). last[i]: after entries 0..i, user_ids[i] has no socket
// anywhere (what single Disconnects in that order would say), so a user repeated in
// one batch is last at the occurrence that removed its final socket, never before.
// At most 1000 entries.
struct DisconnectBatchReq {
    1: list<i64> user_ids
    2: string gateway_id
}
struct DisconnectBatchResp {
    1: list<bool> last
}

// A gateway's heartbeat: keeps the routes of its users alive (they expire otherwise,
// so a dead gateway's users go offline by themselves).
struct RefreshRoutesReq {
    1: string gateway_id
    2: list<i64> user_ids
    // When set (same length as user_ids): the gateway's own socket count per user,
    // which replaces the stored one — how routes rebuild after Redis lost them.
    3: list<i32> counts
}
struct RefreshRoutesResp {}

struct GetRoutesReq {
    1: list<i64> user_ids
}
struct GetRoutesResp {
    // user id -> gateway ids holding at least one of the user's sockets; offline users are absent
    1: map<i64, list<string>> routes
}

// ---- task progress (volatile state) ----

// Where a fan-out job got to: recipients up to cursor (a user id) were pushed.
struct GetJobCursorReq {
    1: string job_id
}
struct GetJobCursorResp {
    1: i64 cursor
    2: bool done
}
struct SaveJobCursorReq {
    1: string job_id
    2: i64 cursor
    3: bool done
}
struct SaveJobCursorResp {}

struct PingReq {}
struct PingResp {}

service RepoService {
    // Succeeds when the store and the volatile state answer.
    PingResp Ping(1: PingReq req)
    CreateUserResp CreateUser(1: CreateUserReq req)
    GetUserByNameResp GetUserByName(1: GetUserByNameReq req)
    GetUsersResp GetUsers(1: GetUsersReq req)
    AppendResp Append(1: AppendReq req)
    AppendBatchResp AppendBatch(1: AppendBatchReq req)
    ListMessagesResp ListMessages(1: ListMessagesReq req)
    GetConversationResp GetConversation(1: GetConversationReq req)
    ListUserConversationsResp ListUserConversations(1: ListUserConversationsReq req)
    SetReadSeqResp SetReadSeq(1: SetReadSeqReq req)
    RevokeTokenResp RevokeToken(1: RevokeTokenReq req)
    IsRevokedResp IsRevoked(1: IsRevokedReq req)
    IsRevokedBatchResp IsRevokedBatch(1: IsRevokedBatchReq req)

    AddFriendResp AddFriend(1: AddFriendReq req)
    ListFriendsResp ListFriends(1: ListFriendsReq req)
    EnsureSingleResp EnsureSingle(1: EnsureSingleReq req)
    CreateGroupResp CreateGroup(1: CreateGroupReq req)
    GetMemberResp GetMember(1: GetMemberReq req)
    ListMembersResp ListMembers(1: ListMembersReq req)
    AddMembersResp AddMembers(1: AddMembersReq req)
    RemoveMemberResp RemoveMember(1: RemoveMemberReq req)
    ListPeersResp ListPeers(1: ListPeersReq req)
    ListPeersBatchResp ListPeersBatch(1: ListPeersBatchReq req)

    ConnectResp Connect(1: ConnectReq req)
    ConnectBatchResp ConnectBatch(1: ConnectBatchReq req)
    DisconnectResp Disconnect(1: DisconnectReq req)
    DisconnectBatchResp DisconnectBatch(1: DisconnectBatchReq req)
    RefreshRoutesResp RefreshRoutes(1: RefreshRoutesReq req)
    GetRoutesResp GetRoutes(1: GetRoutesReq req)

    GetJobCursorResp GetJobCursor(1: GetJobCursorReq req)
    SaveJobCursorResp SaveJobCursor(1: SaveJobCursorReq req)
}
