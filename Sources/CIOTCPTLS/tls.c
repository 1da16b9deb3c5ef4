// OpenSSL behind iotcp's TLS interface (CIOTCPTLS.h): why each choice is made is said where it is made.
#include "CIOTCPTLS.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct iotcp_tls_context {
    SSL_CTX *ctx;
};

struct iotcp_tls_session {
    SSL *ssl;
    BIO *input;   // what the peer sent, for OpenSSL to read
    BIO *output;  // what OpenSSL wrote, for the caller to send
    uint8_t server_secret[64];
    size_t server_secret_length;
    char error[256];
};

static int session_index = -1;

static void copy_error_queue(char *buffer, size_t capacity, const char *fallback) {
    unsigned long code = ERR_get_error();
    if (code != 0) {
        ERR_error_string_n(code, buffer, capacity);
    } else {
        snprintf(buffer, capacity, "%s", fallback);
    }
    ERR_clear_error();
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// OpenSSL offers TLS 1.3's traffic secrets only through the key log. The line is parsed here and kept in
// the session, never written anywhere.
static void key_log(const SSL *ssl, const char *line) {
    static const char label[] = "SERVER_TRAFFIC_SECRET_0 ";
    if (strncmp(line, label, sizeof label - 1) != 0) return;
    struct iotcp_tls_session *session = SSL_get_ex_data(ssl, session_index);
    if (session == NULL) return;
    const char *secret = strchr(line + sizeof label - 1, ' ');  // skip the client random
    if (secret == NULL) return;
    secret += 1;
    size_t length = 0;
    while (length < sizeof session->server_secret) {
        int high = hex_value(secret[2 * length]);
        if (high < 0) break;
        int low = hex_value(secret[2 * length + 1]);
        if (low < 0) break;
        session->server_secret[length++] = (uint8_t)(high << 4 | low);
    }
    session->server_secret_length = length;
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *out_length, const unsigned char *in,
                       unsigned int in_length, void *argument) {
    (void)ssl;
    (void)argument;
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char *selected = NULL;
    if (SSL_select_next_proto(&selected, out_length, http11, sizeof http11, in, in_length) == OPENSSL_NPN_NEGOTIATED) {
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    // A client offering only other protocols (h2 alone) is refused: this server speaks HTTP/1.1.
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

// The context handed out: the SSL_CTX in a struct of ours, so the header needs no OpenSSL type.
static iotcp_tls_context *wrap_context(SSL_CTX *ctx, char *error, size_t error_capacity) {
    iotcp_tls_context *context = calloc(1, sizeof *context);
    if (context == NULL) {
        SSL_CTX_free(ctx);
        snprintf(error, error_capacity, "out of memory");
        return NULL;
    }
    context->ctx = ctx;
    return context;
}

iotcp_tls_context *iotcp_tls_context_new(const char *certificate_path, const char *key_path, char *error,
                                         size_t error_capacity) {
    if (session_index < 0) session_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        copy_error_queue(error, error_capacity, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    // AES-GCM only: these are the suites the NIC seals. ECDHE for forward secrecy in TLS 1.2.
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384") != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384") != 1) {
        copy_error_queue(error, error_capacity, "cannot restrict the cipher suites");
        SSL_CTX_free(ctx);
        return NULL;
    }
    // No tickets, no renegotiation: either would make OpenSSL write records after the handshake, under the
    // record numbers the host has handed to the NIC.
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_keylog_callback(ctx, key_log);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate_path) != 1) {
        char reason[200];
        copy_error_queue(reason, sizeof reason, "unreadable");
        snprintf(error, error_capacity, "certificate %s: %s", certificate_path, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            snprintf(error, error_capacity, "private key %s does not match certificate %s", key_path, certificate_path);
            ERR_clear_error();
            SSL_CTX_free(ctx);
            return NULL;
        }
        char reason[200];
        copy_error_queue(reason, sizeof reason, "unreadable");
        snprintf(error, error_capacity, "private key %s: %s", key_path, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(error, error_capacity, "private key %s does not match certificate %s", key_path, certificate_path);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return wrap_context(ctx, error, error_capacity);
}

void iotcp_tls_context_free(iotcp_tls_context *context) {
    if (context == NULL) return;
    SSL_CTX_free(context->ctx);
    free(context);
}

iotcp_tls_session *iotcp_tls_session_new(iotcp_tls_context *context, int maximum_version) {
    iotcp_tls_session *session = calloc(1, sizeof *session);
    if (session == NULL) return NULL;
    session->ssl = SSL_new(context->ctx);
    session->input = BIO_new(BIO_s_mem());
    session->output = BIO_new(BIO_s_mem());
    if (session->ssl == NULL || session->input == NULL || session->output == NULL) {
        if (session->ssl) SSL_free(session->ssl);
        BIO_free(session->input);
        BIO_free(session->output);
        free(session);
        ERR_clear_error();
        return NULL;
    }
    // An empty memory BIO means "no data yet", not end of file.
    BIO_set_mem_eof_return(session->input, -1);
    SSL_set_bio(session->ssl, session->input, session->output);  // the SSL owns both BIOs now
    SSL_set_ex_data(session->ssl, session_index, session);
    if (maximum_version != 0) SSL_set_max_proto_version(session->ssl, maximum_version);
    SSL_set_accept_state(session->ssl);
    return session;
}

void iotcp_tls_session_free(iotcp_tls_session *session) {
    if (session == NULL) return;
    SSL_free(session->ssl);
    OPENSSL_cleanse(session->server_secret, sizeof session->server_secret);
    free(session);
}

long iotcp_tls_feed(iotcp_tls_session *session, const void *bytes, size_t count) {
    if (count == 0) return 0;
    if (count > INT32_MAX) count = INT32_MAX;
    int written = BIO_write(session->input, bytes, (int)count);
    return written < 0 ? 0 : written;
}

static void record_failure(iotcp_tls_session *session, int result, const char *what) {
    int reason = SSL_get_error(session->ssl, result);
    if (reason == SSL_ERROR_SSL) {
        char detail[200];
        copy_error_queue(detail, sizeof detail, "protocol error");
        snprintf(session->error, sizeof session->error, "%s: %s", what, detail);
    } else if (reason == SSL_ERROR_ZERO_RETURN) {
        snprintf(session->error, sizeof session->error, "%s: the peer sent close_notify", what);
    } else {
        snprintf(session->error, sizeof session->error, "%s failed (SSL error %d)", what, reason);
        ERR_clear_error();
    }
}

int iotcp_tls_handshake(iotcp_tls_session *session) {
    int result = SSL_do_handshake(session->ssl);
    if (result == 1) return 1;
    int reason = SSL_get_error(session->ssl, result);
    if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) return 0;
    record_failure(session, result, "handshake");
    return -1;
}

long iotcp_tls_read(iotcp_tls_session *session, void *buffer, size_t capacity) {
    if (capacity > INT32_MAX) capacity = INT32_MAX;
    int result = SSL_read(session->ssl, buffer, (int)capacity);
    if (result > 0) return result;
    int reason = SSL_get_error(session->ssl, result);
    if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE) return 0;
    if (reason == SSL_ERROR_ZERO_RETURN) return -1;
    record_failure(session, result, "read");
    return -2;
}

size_t iotcp_tls_pending_output(iotcp_tls_session *session) { return BIO_ctrl_pending(session->output); }

long iotcp_tls_take_output(iotcp_tls_session *session, void *buffer, size_t capacity) {
    if (capacity > INT32_MAX) capacity = INT32_MAX;
    int result = BIO_read(session->output, buffer, (int)capacity);
    return result < 0 ? 0 : result;
}

void iotcp_tls_error(iotcp_tls_session *session, char *buffer, size_t capacity) {
    snprintf(buffer, capacity, "%s", session->error[0] ? session->error : "no error");
}

int iotcp_tls_version(iotcp_tls_session *session) { return SSL_version(session->ssl); }

int iotcp_tls_cipher_suite(iotcp_tls_session *session) {
    const SSL_CIPHER *cipher = SSL_get_current_cipher(session->ssl);
    return cipher == NULL ? 0 : SSL_CIPHER_get_protocol_id(cipher);
}

const char *iotcp_tls_server_name(iotcp_tls_session *session) {
    return SSL_get_servername(session->ssl, TLSEXT_NAMETYPE_host_name);
}

size_t iotcp_tls_server_secret(iotcp_tls_session *session, uint8_t *buffer, size_t capacity) {
    if (SSL_version(session->ssl) == TLS1_3_VERSION) {
        if (session->server_secret_length == 0 || session->server_secret_length > capacity) return 0;
        memcpy(buffer, session->server_secret, session->server_secret_length);
        return session->server_secret_length;
    }
    SSL_SESSION *established = SSL_get_session(session->ssl);
    if (established == NULL) return 0;
    return SSL_SESSION_get_master_key(established, buffer, capacity);
}

void iotcp_tls_randoms(iotcp_tls_session *session, uint8_t *client_random, uint8_t *server_random) {
    SSL_get_client_random(session->ssl, client_random, 32);
    SSL_get_server_random(session->ssl, server_random, 32);
}

size_t iotcp_tls_record_plaintext_limit(iotcp_tls_session *session) {
    SSL_SESSION *established = SSL_get_session(session->ssl);
    uint8_t code = established == NULL ? 0 : SSL_SESSION_get_max_fragment_length(established);
    return code >= 1 && code <= 4 ? (size_t)256 << code : 16384;  // 1: 512, 2: 1024, 3: 2048, 4: 4096
}

uint64_t iotcp_tls_write_sequence(iotcp_tls_session *session) {
    // TLS 1.3 without tickets: nothing was written under the application keys yet. TLS 1.2: the server's
    // Finished was record 0 under the new keys (tickets are off, so nothing else followed it).
    return SSL_version(session->ssl) == TLS1_3_VERSION ? 0 : 1;
}

// MARK: - Client

iotcp_tls_context *iotcp_tls_client_context_new(const char *ca_path, int maximum_version, char *error,
                                                size_t error_capacity) {
    if (session_index < 0) session_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        copy_error_queue(error, error_capacity, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (maximum_version != 0) SSL_CTX_set_max_proto_version(ctx, maximum_version);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) {
        char reason[200];
        copy_error_queue(reason, sizeof reason, "unreadable");
        snprintf(error, error_capacity, "CA file %s: %s", ca_path, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx, http11, sizeof http11);
    return wrap_context(ctx, error, error_capacity);
}

iotcp_tls_session *iotcp_tls_client_session_new(iotcp_tls_context *context, const char *server_name) {
    iotcp_tls_session *session = iotcp_tls_session_new(context, 0);
    if (session == NULL) return NULL;
    SSL_set_connect_state(session->ssl);
    SSL_set_tlsext_host_name(session->ssl, server_name);
    SSL_set1_host(session->ssl, server_name);
    return session;
}

long iotcp_tls_write(iotcp_tls_session *session, const void *bytes, size_t count) {
    if (count > INT32_MAX) count = INT32_MAX;
    int written = SSL_write(session->ssl, bytes, (int)count);
    if (written > 0) return written;
    record_failure(session, written, "write");
    return -1;
}

// MARK: - Sealing

struct iotcp_tls_sealer {
    EVP_CIPHER_CTX *cipher;
    int version;
    uint8_t iv[12];
};

iotcp_tls_sealer *iotcp_tls_sealer_new(int version, const uint8_t *key, size_t key_length, const uint8_t *iv,
                                       size_t iv_length) {
    if (key_length != 16 && key_length != 32) return NULL;
    if (version == TLS1_3_VERSION ? iv_length != 12 : (version != TLS1_2_VERSION || iv_length != 4)) return NULL;
    iotcp_tls_sealer *sealer = calloc(1, sizeof *sealer);
    if (sealer == NULL) return NULL;
    sealer->cipher = EVP_CIPHER_CTX_new();
    // The key schedule is computed once here; each record only sets its nonce.
    if (sealer->cipher == NULL ||
        EVP_EncryptInit_ex(sealer->cipher, key_length == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), NULL, key, NULL) != 1) {
        EVP_CIPHER_CTX_free(sealer->cipher);
        free(sealer);
        ERR_clear_error();
        return NULL;
    }
    sealer->version = version;
    memcpy(sealer->iv, iv, iv_length);
    return sealer;
}

void iotcp_tls_sealer_free(iotcp_tls_sealer *sealer) {
    if (sealer == NULL) return;
    EVP_CIPHER_CTX_free(sealer->cipher);  // cleanses the key schedule
    OPENSSL_cleanse(sealer->iv, sizeof sealer->iv);
    free(sealer);
}

size_t iotcp_tls_sealer_header_length(const iotcp_tls_sealer *sealer) {
    return sealer->version == TLS1_3_VERSION ? 5 : 13;
}

size_t iotcp_tls_sealer_trailer_length(const iotcp_tls_sealer *sealer) {
    return sealer->version == TLS1_3_VERSION ? 17 : 16;
}

static void store_be64(uint8_t *out, uint64_t value) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)value;
        value >>= 8;
    }
}

long iotcp_tls_seal(iotcp_tls_sealer *sealer, uint64_t sequence, uint8_t content_type, uint8_t *record,
                    size_t plaintext_length) {
    if (plaintext_length > 16384) return -1;
    uint8_t nonce[12];
    uint8_t aad[13];
    size_t aad_length;
    uint8_t *payload;
    size_t payload_length;
    size_t record_length;
    if (sealer->version == TLS1_3_VERSION) {
        // RFC 8446 §5.2-5.3: the real type after the data, the outer type application_data, the record
        // number XORed into the IV's last 8 bytes, the header as additional data.
        payload = record + 5;
        payload[plaintext_length] = content_type;
        payload_length = plaintext_length + 1;
        record_length = 5 + payload_length + 16;
        record[0] = 23;
        record[1] = 3;
        record[2] = 3;
        record[3] = (uint8_t)((record_length - 5) >> 8);
        record[4] = (uint8_t)(record_length - 5);
        memcpy(nonce, sealer->iv, 12);
        uint8_t number[8];
        store_be64(number, sequence);
        for (int i = 0; i < 8; i++) nonce[4 + i] ^= number[i];
        memcpy(aad, record, 5);
        aad_length = 5;
    } else {
        // RFC 5246 §6.2.3.3 with RFC 5288: the salt and an explicit nonce (the record number, sent in the
        // clear after the header); the additional data is the number, type, version and plaintext length.
        payload = record + 13;
        payload_length = plaintext_length;
        record_length = 13 + plaintext_length + 16;
        record[0] = content_type;
        record[1] = 3;
        record[2] = 3;
        record[3] = (uint8_t)((record_length - 5) >> 8);
        record[4] = (uint8_t)(record_length - 5);
        store_be64(record + 5, sequence);
        memcpy(nonce, sealer->iv, 4);
        memcpy(nonce + 4, record + 5, 8);
        store_be64(aad, sequence);
        aad[8] = content_type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(plaintext_length >> 8);
        aad[12] = (uint8_t)plaintext_length;
        aad_length = 13;
    }
    int length = 0;
    if (EVP_EncryptInit_ex(sealer->cipher, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(sealer->cipher, NULL, &length, aad, (int)aad_length) != 1 ||
        EVP_EncryptUpdate(sealer->cipher, payload, &length, payload, (int)payload_length) != 1 ||
        EVP_EncryptFinal_ex(sealer->cipher, payload + length, &length) != 1 ||
        EVP_CIPHER_CTX_ctrl(sealer->cipher, EVP_CTRL_GCM_GET_TAG, 16, payload + payload_length) != 1) {
        ERR_clear_error();
        return -1;
    }
    return (long)record_length;
}
