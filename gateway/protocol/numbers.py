"""Protocol numbers, named once, from their RFCs."""

# RFC 9052 / 9053: COSE
COSE_TAG_MAC0 = 17
COSE_HDR_ALG = 1
COSE_HDR_KID = 4
COSE_HDR_PARTIAL_IV = 6
COSE_ALG_HMAC_256_64 = 4
HMAC_256_64_TAG_BYTES = 8
MAC0_CONTEXT = "MAC0"
COSE_TAG_SIGN1 = 18                                            # §4.2 COSE_Sign1 (node updates)
COSE_ALG_EDDSA = -8                                            # RFC 9053 §2.2 (Ed25519 here)
SIGN1_CONTEXT = "Signature1"

# RFC 8428: SenML CBOR labels
SENML_BN = -2
SENML_BT = -3
SENML_BU = -4
SENML_BV = -5
SENML_BS = -6
SENML_BVER = -1
SENML_N = 0
SENML_U = 1
SENML_V = 2
SENML_VS = 3
SENML_VB = 4
SENML_S = 5
SENML_T = 6
SENML_UT = 7
SENML_VD = 8
SENML_RELATIVE_TIME_LIMIT = 2**28  # RFC 8428 §4.5.3: smaller times are relative to now

# RFC 7252 / RFC 9052 registry: CoAP Content-Formats
CF_COSE_MAC0 = 17
CF_SENML_CBOR = 112

# docs/protocol.md
MAX_MESSAGE = 1024
CRC_BYTES = 4
PIV_MAX_BYTES = 5
GATEWAY_KID = b"gw"
MSG_ACK = 1
ACK_STORED = 0
ACK_DUPLICATE = 1
ACK_REJECTED = 2
REPLAY_WINDOW = 64
RELEASE_FORMAT = 1               # docs/installer.md "Updating nodes": the release manifest's "fmt"
RELEASE_KID_BYTES = 8            # kid of a release key: the first bytes of SHA-256 of its public key
RELEASE_MAX_PARTS = 64
RELEASE_MAX_PART = 65536         # bytes

# RFC 7252: CoAP
COAP_VERSION = 1
COAP_CON, COAP_NON, COAP_ACK, COAP_RST = 0, 1, 2, 3            # §3 message types
COAP_EMPTY = 0x00                                              # 0.00
COAP_POST = 0x02                                               # 0.02
COAP_CHANGED = 0x44                                            # 2.04
COAP_BAD_REQUEST = 0x80                                        # 4.00
COAP_UNAUTHORIZED = 0x81                                       # 4.01
COAP_BAD_OPTION = 0x82                                         # 4.02
COAP_NOT_FOUND = 0x84                                          # 4.04
COAP_METHOD_NOT_ALLOWED = 0x85                                 # 4.05
COAP_REQUEST_ENTITY_TOO_LARGE = 0x8D                           # 4.13
COAP_UNSUPPORTED_CONTENT_FORMAT = 0x8F                         # 4.15
COAP_SERVICE_UNAVAILABLE = 0xA3                                # 5.03
COAP_OPT_URI_HOST = 3                                          # §5.10 option numbers
COAP_OPT_URI_PORT = 7
COAP_OPT_URI_PATH = 11
COAP_OPT_CONTENT_FORMAT = 12
COAP_OPT_URI_QUERY = 15
COAP_OPT_SIZE1 = 60
COAP_OPT_BLOCK2 = 23                                           # RFC 7959 §2.1 block-wise transfers
COAP_OPT_BLOCK1 = 27
COAP_OPT_SIZE2 = 28
COAP_CONTINUE = 0x5F                                           # 2.31 (RFC 7959 §2.9.1)
COAP_REQUEST_ENTITY_INCOMPLETE = 0x88                          # 4.08 (RFC 7959 §2.9.2)
COAP_BLOCK_SZX_MAX = 6                                         # 1024-byte blocks; 7 is reserved (BERT)
COAP_BLOCK_NUM_MAX = (1 << 20) - 1                             # NUM takes at most 20 bits
COAP_PAYLOAD_MARKER = 0xFF
COAP_MAX_TOKEN = 8
COAP_ACK_TIMEOUT = 2.0                                         # §4.8 transmission parameters (seconds)
COAP_ACK_RANDOM_FACTOR = 1.5
COAP_MAX_RETRANSMIT = 4
COAP_DATA_PATH = "d"                                           # docs/protocol.md §5: POST /d
