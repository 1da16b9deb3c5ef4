// OpenSSL (Debian's libssl) behind a small C interface for iotcp's TLS: the server handshake on the host,
// driven over memory BIOs so the bytes travel on an iotcp connection, and in-place AES-GCM record sealing for
// the NIC. OpenSSL's headers stay in this target: Swift sees plain C types only.
#ifndef CIOTCPTLS_H
#define CIOTCPTLS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Server context (one per certificate)

typedef struct iotcp_tls_context iotcp_tls_context;

/// A server context from a PEM certificate chain and its PEM private key: TLS 1.2 and 1.3, AES-GCM suites
/// only (the ones the NIC seals), ALPN answering http/1.1, SNI recorded, no session tickets (a ticket would
/// take a record number of the NIC's stream). On failure returns NULL with a message in `error`.
iotcp_tls_context *iotcp_tls_context_new(const char *certificate_path, const char *key_path,
                                         char *error, size_t error_capacity);
void iotcp_tls_context_free(iotcp_tls_context *context);

// MARK: - Session (one per connection)

typedef struct iotcp_tls_session iotcp_tls_session;

/// `maximum_version`: 0 for TLS 1.3, or 0x0303 to stop at TLS 1.2.
iotcp_tls_session *iotcp_tls_session_new(iotcp_tls_context *context, int maximum_version);
/// Frees the session and erases the secrets it captured.
void iotcp_tls_session_free(iotcp_tls_session *session);

/// Bytes received from the peer; returns how many were taken (all of them, short of memory).
long iotcp_tls_feed(iotcp_tls_session *session, const void *bytes, size_t count);
/// Moves the handshake on: 1 done, 0 needs more input, -1 failed (`iotcp_tls_error` says why).
int iotcp_tls_handshake(iotcp_tls_session *session);
/// Decrypted application bytes: >0 bytes, 0 none yet, -1 the peer closed (close_notify), -2 failed.
long iotcp_tls_read(iotcp_tls_session *session, void *buffer, size_t capacity);
/// Bytes OpenSSL wrote for the peer (handshake messages, alerts) not yet taken.
size_t iotcp_tls_pending_output(iotcp_tls_session *session);
long iotcp_tls_take_output(iotcp_tls_session *session, void *buffer, size_t capacity);
/// The reason for the last failure of this session, as OpenSSL put it (or an alert's description).
void iotcp_tls_error(iotcp_tls_session *session, char *buffer, size_t capacity);

/// After the handshake: 0x0303 or 0x0304, the IANA id of the cipher suite, the SNI name (or NULL), ALPN.
int iotcp_tls_version(iotcp_tls_session *session);
int iotcp_tls_cipher_suite(iotcp_tls_session *session);
const char *iotcp_tls_server_name(iotcp_tls_session *session);
/// The server's write secret: TLS 1.3's server application traffic secret 0 (from OpenSSL's key log
/// callback), TLS 1.2's master secret. Returns its length, or 0 if unknown.
size_t iotcp_tls_server_secret(iotcp_tls_session *session, uint8_t *buffer, size_t capacity);
/// The hello randoms (32 bytes each), for TLS 1.2's key expansion.
void iotcp_tls_randoms(iotcp_tls_session *session, uint8_t *client_random, uint8_t *server_random);
/// The most plaintext a record may carry on this session: 16384, or less when the client asked for a
/// smaller max_fragment_length (RFC 6066) and OpenSSL agreed.
size_t iotcp_tls_record_plaintext_limit(iotcp_tls_session *session);
/// Records OpenSSL wrote under the current write keys: the first record number the caller may use.
uint64_t iotcp_tls_write_sequence(iotcp_tls_session *session);

// MARK: - Client (tests and tools: a peer that checks what the server sends)

/// A client context trusting the PEM certificates in `ca_path`; `maximum_version` as for sessions.
iotcp_tls_context *iotcp_tls_client_context_new(const char *ca_path, int maximum_version, char *error,
                                                size_t error_capacity);
/// A client session sending SNI `server_name` and checking the certificate is for it.
iotcp_tls_session *iotcp_tls_client_session_new(iotcp_tls_context *context, const char *server_name);
/// Application bytes to send (after the handshake); returns how many were taken, -1 on failure.
long iotcp_tls_write(iotcp_tls_session *session, const void *bytes, size_t count);

// MARK: - Record sealing in place (AES-GCM)

typedef struct iotcp_tls_sealer iotcp_tls_sealer;

/// `version` 0x0304: `iv` is the 12-byte write IV. 0x0303: `iv` is the 4-byte salt (RFC 5288).
/// `key` is 16 or 32 bytes. NULL on bad lengths.
iotcp_tls_sealer *iotcp_tls_sealer_new(int version, const uint8_t *key, size_t key_length,
                                       const uint8_t *iv, size_t iv_length);
/// Frees the sealer and erases its key schedule.
void iotcp_tls_sealer_free(iotcp_tls_sealer *sealer);
/// Bytes in front of the plaintext (record header, and TLS 1.2's explicit nonce) and after it (TLS 1.3's
/// content type, the tag).
size_t iotcp_tls_sealer_header_length(const iotcp_tls_sealer *sealer);
size_t iotcp_tls_sealer_trailer_length(const iotcp_tls_sealer *sealer);
/// Seals record `sequence` in place: `record` points at the record's first byte, the plaintext lies
/// `header_length` bytes after it, and `trailer_length` bytes after the plaintext are free. Returns the
/// record's length, or -1 if the plaintext is longer than a record may be.
long iotcp_tls_seal(iotcp_tls_sealer *sealer, uint64_t sequence, uint8_t content_type, uint8_t *record,
                    size_t plaintext_length);

#ifdef __cplusplus
}
#endif

#endif
