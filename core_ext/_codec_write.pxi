# The series codec's lossless layout, compiled: included by _codec.pyx (whose kernels it
# calls). `_codec_format` (encode, write_values, detect_decimal, write_exceptions,
# write_istream) is the specification; the same choices in the same order, so the same
# bytes (tests/core/test_codec.py compares every stream with the reference's).

_HEAD = fmt.MAGIC + bytes((fmt.VERSION, 0))


cdef bytes _varint(uint64_t v):
    cdef uint8_t buf[10]
    return (<char*>buf)[:put_varint(buf, 0, v)]


_CHUNK = _varint(fmt.CHUNK)


cdef bytes _svarint(v):
    cdef int64_t x
    try:
        x = v
    except OverflowError:
        return _varint(fmt.zigzag(v))
    return _varint((<uint64_t>x << 1) ^ <uint64_t>(x >> 63))


cdef _write_istream(w, ints, tuple p):
    """fmt.write_istream, given its plan."""
    cdef list parts = w.parts
    cdef int order = p[1], m = p[2], i
    cdef Py_ssize_t n = len(ints), first
    cdef const int64_t[::1] x
    base, gcd, fine = p[3], p[4], p[5]
    parts.append(bytes((order, m)))
    if order == 0:
        parts.append(_svarint(base))
    else:
        x = as_q(ints)
        for i in range(min(order, n)):
            parts.append(_svarint(x[i]))
    parts.append(_varint(gcd))
    if n <= order:
        return
    if fine is not None:
        first = _first_nonzero(fine)
        if 0 <= first < (2 << m) and fine[first] == n - order:
            # one symbol and no raw bits (a regular clock, a constant): fmt.write_residuals's
            # table of that one symbol, and the rANS states as they start (encode_ints moves
            # them not at all): no pass over the values
            parts.append(write_table(_array.array("q", [first]), _ONE_FREQ))
            parts.append(_STILL_RANS)
            return
    table, rans, extra = encode_body(ints, order, base, gcd, m)
    parts.append(table)
    parts.append(_varint(len(rans)))
    parts.append(rans)
    parts.append(_varint(len(extra)))
    parts.append(extra)


cdef Py_ssize_t _first_nonzero(fine) except -2:
    cdef const int64_t[::1] h = as_q(fine)
    cdef Py_ssize_t i
    for i in range(h.shape[0]):
        if h[i]:
            return i
    return -1


cdef object _detect_decimal(values):
    """fmt.detect_decimal."""
    size, counts = decimal_counts(values, fmt.DECIMAL_SAMPLE, fmt.MAX_EXPONENT)
    cdef Py_ssize_t sz = size, count, best_count = 0, e = 0
    cdef double score, best_score = INFINITY
    best_e = None
    if sz == 0:
        return None
    for count in counts:
        score = <double>((sz - count) * fmt.EXCEPTION_BITS) + <double>(sz * e) * fmt.DIGIT_BITS
        if score < best_score:
            best_e, best_score, best_count = e, score, count
        if count == sz:
            break
        e += 1
    return best_e if best_count * 10 >= sz * 9 else None


cdef _write_values(w, values, bint allow_dict):
    """fmt.write_values."""
    cdef Py_ssize_t n = len(values)
    cdef list options = []
    cdef list parts
    exc = ()
    e = _detect_decimal(values) if n else None
    if e is not None:
        ints, exc = decimal_ints(values, e)
        if len(exc) * 4 < n:
            w2 = fmt.Writer()
            parts = w2.parts
            parts.append(bytes((fmt.K_DECIMAL, e)))
            parts.append(_varint(len(exc)))
            if len(exc):
                _write_istream(w2, exc, plan(exc))
                held = ordered(take(values, exc))
                _write_istream(w2, held, plan(held))
            head = b"".join(parts)
            p = plan(ints)
            options.append((p[0] + 8 * len(head), fmt.K_DECIMAL, head, ints, p))
    if not options or len(exc) * 100 > n:
        bits = ordered(values)
        p = plan(bits)
        options.append((p[0] + 8, fmt.K_BITS, _K_BITS, bits, p))
    if allow_dict and n >= 64:
        found = dictionary(values, n // fmt.DICT_MAX_FRACTION)
        if found is not None:
            uniq, index = found
            w2 = fmt.Writer()
            parts = w2.parts
            parts.append(_K_DICT)
            parts.append(_varint(len(uniq)))
            _write_values(w2, unordered(uniq), False)
            p = plan(index)
            head = b"".join(parts)
            options.append((p[0] + 8 * len(head), fmt.K_DICT, head, index, p))
    best = options[0]
    for o in options[1:]:  # the first of the smallest, as min() takes
        if o[0] < best[0]:
            best = o
    if best[0] >= 64 * n + 8:
        w.parts.append(_K_RAW)
        w.parts.append(fmt._le(values))
        return
    w.parts.append(best[2])
    _write_istream(w, best[3], best[4])


_ONE_FREQ = _array.array("q", [fmt.PROB_SCALE])
_STILL_RANS = _varint(8) + (<uint64_t>RANS_L).to_bytes(4, "little") * 2 + _varint(0)  # blob(states), blob(b"")
_K_BITS = bytes((fmt.K_BITS,))
_K_DICT = bytes((fmt.K_DICT,))
_K_RAW = bytes((fmt.K_RAW,))
