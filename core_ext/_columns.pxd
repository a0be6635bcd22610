# Column arguments of the compiled core: any 1-D buffer of int64 or float64 is taken as it
# is (numpy arrays, array.array, memoryviews), anything else is copied into an array.array.
# Shared by the modules that cimport it (inline: compiled into each).

cdef inline object as_q(object x):
    """x as a buffer of int64 ("q")."""
    try:
        m = memoryview(x)
        if m.ndim == 1 and m.itemsize == 8 and m.format in ("q", "l", "<q", "<l", "=q", "=l") and m.c_contiguous:
            return m.cast("B").cast("q") if m.format != "q" else m
    except TypeError:
        pass
    import array
    return array.array("q", x)


cdef inline object as_d(object x):
    """x as a buffer of float64 ("d")."""
    try:
        m = memoryview(x)
        if m.ndim == 1 and m.format in ("d", "<d", "=d") and m.c_contiguous:
            return m.cast("B").cast("d") if m.format != "d" else m
    except TypeError:
        pass
    import array
    return array.array("d", x)
