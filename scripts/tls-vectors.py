#!/usr/bin/env python3
"""Makes the vectors in Tests/IOTCPTLSTests that no RFC prints, with another implementation (Python's
cryptography, on OpenSSL):
- a TLS 1.2 AES-GCM record, straight from RFC 5246 6.2.3.3 and RFC 5288 3: nonce = salt || explicit nonce
  (the record number), additional data = seq_num || type || version || length, record = header || explicit
  nonce || ciphertext || tag;
- the TLS 1.3 KeyUpdate of RFC 8448's server application traffic secret (RFC 8446 7.2: HKDF-Expand-Label
  with "traffic upd").
Prints each in hex, one a line."""
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

key = bytes(range(32))                      # AES-256-GCM
salt = bytes([0xa0, 0xa1, 0xa2, 0xa3])      # the 4-byte implicit part of the nonce
sequence = 5
plaintext = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
content_type = 23                           # application_data
explicit = sequence.to_bytes(8, "big")
aad = explicit + bytes([content_type, 3, 3]) + len(plaintext).to_bytes(2, "big")
sealed = AESGCM(key).encrypt(salt + explicit, plaintext, aad)   # ciphertext || tag
fragment = explicit + sealed
record = bytes([content_type, 3, 3]) + len(fragment).to_bytes(2, "big") + fragment
print(record.hex())

secret = bytes.fromhex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
label = b"tls13 traffic upd"
info = (32).to_bytes(2, "big") + bytes([len(label)]) + label + bytes([0])
print(HKDFExpand(hashes.SHA256(), 32, info).derive(secret).hex())
