# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Datagrams in batches on a non-blocking UDP socket, compiled: one `recvmmsg` for up
to `count` datagrams, one `sendmmsg` for up to `count` answers. Same API and results
as `_udp_py` (the specification: read its docstring). Linux only (both calls are
Linux's; elsewhere the reference serves).

The buffers (count × size bytes, the headers, the addresses) are the Batch's own,
made once; the GIL is released during each system call, so a Batch belongs to one
thread. Addresses: an IPv4 sender's (host, port) tuple is made once and kept (at
most 65,536 of them, then the cache starts again), and so is the sockaddr a
destination tuple packs into.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset, strerror
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int recvmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags, void *tmo)
    int sendmmsg(int fd, mmsghdr *vmessages, unsigned int vlen, int flags)
    enum: AF_INET
    enum: AF_INET6
    enum: MSG_DONTWAIT
    enum: MSG_TRUNC

cdef extern from "<netinet/in.h>" nogil:
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    uint16_t ntohs(uint16_t)
    uint16_t htons(uint16_t)
    uint32_t ntohl(uint32_t)
    uint32_t htonl(uint32_t)

DEF ADDRSTRLEN = 64
DEF CACHE_MAX = 65536


cdef class Batch:
    cdef readonly object sock
    cdef readonly int count
    cdef readonly Py_ssize_t size
    cdef int fd, family
    cdef char *buf
    cdef mmsghdr *hdrs
    cdef iovec *iov
    cdef sockaddr_storage *names
    cdef dict _senders   # IPv4 (ip << 16 | port) -> (host, port)
    cdef dict _dests     # address tuple -> packed sockaddr (bytes)
    cdef object _error   # an OSError to raise on the next recv()
    cdef list _keep      # the data objects of the messages being sent

    def __cinit__(self, sock, int count=32, Py_ssize_t size=2048):
        if count < 1 or size < 1:
            raise ValueError("count and size must be at least 1")
        self.sock, self.count, self.size = sock, count, size
        self.fd = sock.fileno()
        self.family = sock.family
        self.buf = <char *>calloc(count, size)
        self.hdrs = <mmsghdr *>calloc(count, sizeof(mmsghdr))
        self.iov = <iovec *>calloc(count, sizeof(iovec))
        self.names = <sockaddr_storage *>calloc(count, sizeof(sockaddr_storage))
        if not (self.buf and self.hdrs and self.iov and self.names):
            raise MemoryError()
        self._senders, self._dests, self._error, self._keep = {}, {}, None, []

    def __dealloc__(self):
        free(self.buf)
        free(self.hdrs)
        free(self.iov)
        free(self.names)

    cdef object _address(self, sockaddr_storage *name):
        cdef sockaddr_in *v4
        cdef sockaddr_in6 *v6
        cdef char text[ADDRSTRLEN]
        cdef long key
        if name.ss_family == AF_INET:
            v4 = <sockaddr_in *>name
            key = (<long>ntohl(v4.sin_addr.s_addr) << 16) | ntohs(v4.sin_port)
            addr = self._senders.get(key)
            if addr is None:
                inet_ntop(AF_INET, &v4.sin_addr, text, ADDRSTRLEN)
                addr = (text.decode("ascii"), ntohs(v4.sin_port))
                if len(self._senders) >= CACHE_MAX:
                    self._senders.clear()
                self._senders[key] = addr
            return addr
        if name.ss_family == AF_INET6:
            v6 = <sockaddr_in6 *>name
            inet_ntop(AF_INET6, &v6.sin6_addr, text, ADDRSTRLEN)
            return (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)
        return None

    def recv(self):
        cdef int i, n, err = 0
        cdef unsigned int length
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        for i in range(self.count):
            self.iov[i].iov_base = self.buf + i * self.size
            self.iov[i].iov_len = self.size
            memset(&self.hdrs[i], 0, sizeof(mmsghdr))
            self.hdrs[i].msg_hdr.msg_name = &self.names[i]
            self.hdrs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self.hdrs[i].msg_hdr.msg_iov = &self.iov[i]
            self.hdrs[i].msg_hdr.msg_iovlen = 1
        while True:
            with nogil:
                n = recvmmsg(self.fd, self.hdrs, self.count, MSG_DONTWAIT, NULL)
                if n < 0:
                    err = errno
            if n >= 0 or err != EINTR:
                break
        if n < 0:
            if err == EAGAIN:
                return []
            raise OSError(err, strerror(err).decode("utf-8", "replace"))
        out = []
        for i in range(n):
            length = self.hdrs[i].msg_len
            if length > self.size:
                length = self.size
            out.append((PyBytes_FromStringAndSize(self.buf + i * self.size, length),
                        self._address(&self.names[i]),
                        (self.hdrs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0))
        return out

    cdef object _pack(self, addr):
        """The sockaddr for a destination tuple, or None when it is not a numeric address of
        the socket's family (then the socket module's sendto deals with it)."""
        cdef sockaddr_in v4
        cdef sockaddr_in6 v6
        packed = self._dests.get(addr)
        if packed is not None:
            return packed
        if type(addr) is not tuple or len(addr) < 2 or type(addr[0]) is not str or type(addr[1]) is not int:
            return None
        port = addr[1]
        if not 0 <= port <= 0xFFFF:
            return None
        host = (<str>addr[0]).encode("ascii", "replace")
        if self.family == AF_INET and len(addr) == 2:
            memset(&v4, 0, sizeof(v4))
            if inet_pton(AF_INET, host, &v4.sin_addr) != 1:
                return None
            v4.sin_family = AF_INET
            v4.sin_port = htons(port)
            packed = PyBytes_FromStringAndSize(<char *>&v4, sizeof(v4))
        elif self.family == AF_INET6 and len(addr) in (2, 4):
            memset(&v6, 0, sizeof(v6))
            if inet_pton(AF_INET6, host, &v6.sin6_addr) != 1:
                return None
            if len(addr) == 4:
                if type(addr[2]) is not int or type(addr[3]) is not int:
                    return None
                if not (0 <= addr[2] <= 0xFFFFF and 0 <= addr[3] <= 0xFFFFFFFF):
                    return None
                v6.sin6_flowinfo = htonl(addr[2])
                v6.sin6_scope_id = addr[3]
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(port)
            packed = PyBytes_FromStringAndSize(<char *>&v6, sizeof(v6))
        else:
            return None
        if len(self._dests) >= CACHE_MAX:
            self._dests.clear()
        self._dests[addr] = packed
        return packed

    def send(self, messages):
        """(done, errors): see the reference."""
        cdef list msgs = messages if type(messages) is list else list(messages)
        cdef Py_ssize_t total = len(msgs), at = 0, j
        cdef int k, n, err = 0
        cdef list errors = []
        cdef bytes packed
        while at < total:
            # gather up to `count` messages whose addresses pack; stop before one that does not
            k = 0
            self._keep.clear()
            while k < self.count and at + k < total:
                data, addr = msgs[at + k]
                p = self._pack(addr)
                if p is None or type(data) is not bytes:
                    break
                packed = <bytes>p
                self._keep.append(data)
                self._keep.append(packed)
                memcpy(&self.names[k], PyBytes_AS_STRING(packed), PyBytes_GET_SIZE(packed))
                memset(&self.hdrs[k], 0, sizeof(mmsghdr))
                self.iov[k].iov_base = PyBytes_AS_STRING(data)
                self.iov[k].iov_len = PyBytes_GET_SIZE(data)
                self.hdrs[k].msg_hdr.msg_name = &self.names[k]
                self.hdrs[k].msg_hdr.msg_namelen = <socklen_t>PyBytes_GET_SIZE(packed)
                self.hdrs[k].msg_hdr.msg_iov = &self.iov[k]
                self.hdrs[k].msg_hdr.msg_iovlen = 1
                k += 1
            if k == 0:  # not a numeric address of this family (or not bytes): the socket module's way
                data, addr = msgs[at]
                try:
                    self.sock.sendto(data, addr)
                except BlockingIOError:
                    return at, errors
                except OSError as exc:
                    errors.append((at, exc.errno))
                at += 1
                continue
            j = 0
            while j < k:
                with nogil:
                    n = sendmmsg(self.fd, &self.hdrs[j], k - j, MSG_DONTWAIT)
                    if n < 0:
                        err = errno
                if n >= 0:
                    j += n
                elif err == EINTR:
                    continue
                elif err == EAGAIN:
                    self._keep.clear()
                    return at + j, errors
                else:  # this message failed; the ones after it are tried
                    errors.append((at + j, err))
                    j += 1
            at += k
        self._keep.clear()
        return total, errors
