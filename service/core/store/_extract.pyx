# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The bulk load's extraction kernel: a run of JSON lines -> :class:`bulk.Extracted`, in C.

Per line: ``orjson.loads``, then ``orjson.dumps`` of the document, scanned in C. The line takes
the fast path when every ``"$`` of that text opens a canonical date wrapper
``{"$date":"YYYY-MM-DDTHH:MM:SS.mmmZ"}`` (a real calendar day): then the decoded room's bytes
are that text with each wrapper written as its ISO string (exactly ``orjson.dumps`` of the
Extended JSON decode), and every field the indexes need is read from the parsed document with
C-level dict lookups. Any other line (another wrapper, another date form, a ``$`` string)
goes to ``slow(chunk, raw, number)``, the pure Python path, which is also the reference the
kernel is tested against (tests/core/test_extract_kernel.py). O(bytes) per line.
"""

from cpython.array cimport array, resize_smart
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.dict cimport PyDict_GetItem, PyDict_Size, PyDict_SetDefault
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy

import orjson

cdef int64_t NULL_CODE = -(1 << 63)
cdef int64_t NAN_CODE = NULL_CODE + 1
cdef int64_t DATE0 = (1 << 63) - (1 << 50)
cdef double LIMIT = 9007199254740992.0  # 2.0 ** 53
cdef int64_t DAY_MS = 86400000


cdef inline void push_q(array a, int64_t v):
    cdef Py_ssize_t n = len(a)
    resize_smart(a, n + 1)
    a.data.as_longlongs[n] = v


cdef inline void push_i(array a, uint32_t v):
    cdef Py_ssize_t n = len(a)
    resize_smart(a, n + 1)
    a.data.as_uints[n] = v


cdef inline int digits(const unsigned char* s, int n, int* out) noexcept:
    cdef int i, v = 0
    for i in range(n):
        if s[i] < 48 or s[i] > 57:
            return 0
        v = v * 10 + (s[i] - 48)
    out[0] = v
    return 1


cdef inline int days_in_month(int y, int m) noexcept:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


cdef int iso_ms(const unsigned char* s, int64_t* out) noexcept:
    """1 and the milliseconds since the epoch when the 24 bytes at ``s`` are a canonical date
    (``YYYY-MM-DDTHH:MM:SS.mmmZ``, a real day of year 1..9999), else 0."""
    cdef int y, mo, d, h, mi, se, ms
    if (s[4] != 45 or s[7] != 45 or s[10] != 84 or s[13] != 58 or s[16] != 58
            or s[19] != 46 or s[23] != 90):
        return 0
    if not (digits(s, 4, &y) and digits(s + 5, 2, &mo) and digits(s + 8, 2, &d)
            and digits(s + 11, 2, &h) and digits(s + 14, 2, &mi) and digits(s + 17, 2, &se)
            and digits(s + 20, 3, &ms)):
        return 0
    if y < 1 or mo < 1 or mo > 12 or d < 1 or d > days_in_month(y, mo):
        return 0
    if h > 23 or mi > 59 or se > 59:
        return 0
    # days from civil (proleptic Gregorian), H. Hinnant's algorithm
    cdef int64_t yy = y - (1 if mo <= 2 else 0)
    cdef int64_t era = (yy if yy >= 0 else yy - 399) // 400
    cdef int64_t yoe = yy - era * 400
    cdef int64_t doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    cdef int64_t days = era * 146097 + doe - 719468
    out[0] = days * DAY_MS + h * 3600000 + mi * 60000 + se * 1000 + ms
    return 1


cdef inline int64_t num_code(double v) noexcept:
    cdef int64_t bits
    memcpy(&bits, &v, 8)
    if bits >= 0:
        return bits
    return -(bits & 0x7FFFFFFFFFFFFFFF)


cdef Py_ssize_t untag_into(bytes text, bytearray arena) except -2:
    """Append ``text`` (orjson bytes) to ``arena`` with each canonical date wrapper written as
    its ISO string; the bytes appended, or -1 (nothing appended) when a ``"$`` of the text is
    no canonical date wrapper."""
    cdef const unsigned char* src = <const unsigned char*> PyBytes_AS_STRING(text)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(text)
    cdef Py_ssize_t base = PyByteArray_GET_SIZE(arena)
    cdef Py_ssize_t p = 0, last = 0, at, w = 0
    cdef const unsigned char* hit
    cdef unsigned char* dst
    cdef int64_t ms
    PyByteArray_Resize(arena, base + n)  # the output is never longer than the input
    dst = <unsigned char*> PyByteArray_AS_STRING(arena) + base
    while True:
        hit = <const unsigned char*> memchr(src + p, 36, n - p)  # '$'
        if hit == NULL:
            break
        at = hit - src
        p = at + 1
        if at == 0 or src[at - 1] != 34:  # a $ inside a string: no key or value starts here
            continue
        if (at < 2 or src[at - 2] != 123 or at + 34 > n
                or memcmp(src + at, b'$date":"', 8) != 0
                or src[at + 32] != 34 or src[at + 33] != 125
                or not iso_ms(src + at + 8, &ms)):
            PyByteArray_Resize(arena, base)
            return -1
        memcpy(dst + w, src + last, at - 2 - last)
        w += at - 2 - last
        dst[w] = 34
        memcpy(dst + w + 1, src + at + 8, 24)
        dst[w + 25] = 34
        w += 26
        last = at + 34
        p = last
    memcpy(dst + w, src + last, n - last)
    w += n - last
    PyByteArray_Resize(arena, base + w)
    return w


cdef inline object date_text(object v):
    """The ISO text of a date wrapper (a one-key ``$date`` dict), else None. Only called on
    fast-path documents, where every such wrapper holds a canonical date string."""
    cdef PyObject* inner
    if type(v) is dict and PyDict_Size(v) == 1:
        inner = PyDict_GetItem(v, "$date")
        if inner != NULL:
            return <object> inner
    return None


cdef inline object lookup(dict doc, str top, object sub):
    cdef PyObject* found = PyDict_GetItem(doc, top)
    if found == NULL:
        return None
    cdef object v = <object> found
    if sub is None:
        return v
    if type(v) is not dict:
        return None
    found = PyDict_GetItem(v, sub)
    return None if found == NULL else <object> found


def extract_run(
    const unsigned char[:] data,
    Py_ssize_t first_line,
    chunk,
    list sort_get,
    list eq_get,
    object slow,
    object other,
    object line_error,
):
    """Extract every line of ``data`` into ``chunk`` (a bulk.Chunk); see the module docstring.

    ``sort_get``/``eq_get``: (top, sub or None) per sortable / equality field; ``other(v)``: a
    dictionary-coded value that is no string, as the decode gives it; ``line_error(number,
    reason)``: the exception for a bad line."""
    ex = chunk.extracted
    cdef list ids = ex.ids
    cdef bytearray arena = ex.arena
    cdef array sizes = ex.sizes
    cdef array opened = ex.opened
    cdef list codes = ex.codes
    cdef list drows = ex.drows
    cdef list dvals = ex.dvals
    cdef list eq_keys = ex.eq_keys
    cdef list eq_rows = ex.eq_rows
    cdef array name_rows = ex.name_rows
    cdef list names = ex.names
    cdef list not_v = chunk.not_v
    cdef dict seen = {}  # one object per distinct string of the run (a smaller pickle)
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t start = 0, end, number = first_line, lines = 0, written
    cdef Py_ssize_t nsort = len(sort_get), neq = len(eq_get), f
    cdef const unsigned char* base = &data[0] if n else <const unsigned char*> b""
    cdef const unsigned char* nl
    cdef uint32_t row
    cdef object doc, v, text, rid, kind, name, item, key
    cdef str top
    cdef int64_t ms
    cdef double x
    cdef long long iv
    cdef int overflow
    cdef bint blank
    cdef Py_ssize_t i, size
    cdef const char* utf8
    loads, dumps = orjson.loads, orjson.dumps
    JSONDecodeError = orjson.JSONDecodeError
    while start <= n:
        nl = <const unsigned char*> memchr(base + start, 10, n - start) if n > start else NULL
        end = (nl - base) if nl != NULL else n
        raw = PyBytes_FromStringAndSize(<const char*> base + start, end - start)
        lines += 1
        start = end + 1
        number = first_line + lines - 1
        try:
            doc = loads(raw)
        except JSONDecodeError as exc:
            if not raw.strip():
                if nl == NULL:
                    break
                continue
            raise line_error(number, f"not JSON: {exc}") from None
        if type(doc) is not dict:
            raise line_error(number, "not a JSON object")
        text = dumps(doc)
        written = untag_into(text, arena)
        if written < 0:
            slow(chunk, raw, number)
        else:
            rid = lookup(doc, "_id", None)
            if type(rid) is not str:
                PyByteArray_Resize(arena, PyByteArray_GET_SIZE(arena) - written)
                raise line_error(number, "document without a string _id")
            kind = lookup(doc, "t", None)
            if type(kind) is not str or kind != "v":
                PyByteArray_Resize(arena, PyByteArray_GET_SIZE(arena) - written)
                not_v.append(number)
            else:
                row = len(ids)
                ids.append(rid)
                push_i(sizes, <uint32_t> written)
                if PyDict_GetItem(doc, "open") != NULL:
                    push_i(opened, row)
                name = lookup(doc, "name", None)
                if type(name) is not str:
                    name = date_text(name)
                if name is not None:
                    push_i(name_rows, row)
                    names.append(name)
                for f in range(nsort):
                    top, sub = sort_get[f]
                    v = lookup(doc, top, sub)
                    if v is None:
                        push_q(codes[f], NULL_CODE)
                        continue
                    if type(v) is int:
                        iv = PyLong_AsLongLongAndOverflow(v, &overflow)
                        if overflow == 0 and -(1 << 53) <= iv <= (1 << 53):
                            push_q(codes[f], num_code(<double> iv))
                            continue
                    elif type(v) is float:
                        x = v
                        if x != x:
                            push_q(codes[f], NAN_CODE)
                            continue
                        if -LIMIT <= x <= LIMIT:
                            push_q(codes[f], num_code(x))
                            continue
                    elif type(v) is str:
                        v = <object> PyDict_SetDefault(seen, v, v)
                        push_i(drows[f], row)
                        (<list> dvals[f]).append(v)
                        push_q(codes[f], 0)
                        continue
                    elif type(v) is dict:
                        item = date_text(v)
                        if type(item) is str:
                            utf8 = PyUnicode_AsUTF8AndSize(item, &size)
                            if size == 24 and iso_ms(<const unsigned char*> utf8, &ms):
                                push_q(codes[f], DATE0 + ms)
                                continue
                    push_i(drows[f], row)
                    (<list> dvals[f]).append(other(v))
                    push_q(codes[f], 0)
                for f in range(neq):
                    top, sub = eq_get[f]
                    v = lookup(doc, top, sub)
                    if type(v) is str:
                        (<list> eq_keys[f]).append(<object> PyDict_SetDefault(seen, v, v))
                        push_i(eq_rows[f], row)
                    elif type(v) is list:
                        for item in dict.fromkeys([k for k in v if type(k) is str]):
                            (<list> eq_keys[f]).append(<object> PyDict_SetDefault(seen, item, item))
                            push_i(eq_rows[f], row)
        if nl == NULL:
            break
    chunk.lines = lines
