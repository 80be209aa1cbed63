// repo owns storage: MySQL (or SQLite) through gorm and Redis (or in-process state).
// Times are unix milliseconds; ids are snowflakes.
namespace go repoapi

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

struct PingReq {}
struct PingResp {}

service RepoService {
    // Succeeds when the store and the volatile state answer.
    PingResp Ping(1: PingReq req)
    CreateUserResp CreateUser(1: CreateUserReq req)
    GetUserByNameResp GetUserByName(1: GetUserByNameReq req)
    GetUsersResp GetUsers(1: GetUsersReq req)
    AppendResp Append(1: AppendReq req)
    ListMessagesResp ListMessages(1: ListMessagesReq req)
    GetConversationResp GetConversation(1: GetConversationReq req)
    ListUserConversationsResp ListUserConversations(1: ListUserConversationsReq req)
    SetReadSeqResp SetReadSeq(1: SetReadSeqReq req)
    RevokeTokenResp RevokeToken(1: RevokeTokenReq req)
    IsRevokedResp IsRevoked(1: IsRevokedReq req)
}
