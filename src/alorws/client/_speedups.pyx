# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The reader's per-frame work in C: the compiled side of :mod:`alorws.client._ws`.

* :class:`BatchReader` wraps a ``BatchListener`` and runs its hot path: picows calls its
  ``on_ws_frame`` through the C vtable, it reads the frame's fields as C values and collects
  the whole messages of one socket read; every other frame goes to the listener's Python
  logic, so behaviour is the same frame for frame.
* :func:`dispatch` is ``TailTable.dispatch`` (:mod:`alorws.protocol.codec`): the exact-match
  rule on the frame's head and tail, runs of one subscription to one ``push_many``, the rest
  to ``route`` in order.

Built by ``hatch_build.py`` against the picows installed at build time; the struct layouts
cimported from picows are only valid for that version, so :mod:`alorws.client._ws` uses this
module only when :data:`PICOWS_VERSION` equals the installed ``picows.__version__``.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_GET_SIZE
from libc.string cimport memcmp

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport, _make_test_ws_frame


cdef extern from *:
    """
    #ifndef ALORWS_PICOWS_VERSION
    #define ALORWS_PICOWS_VERSION ""
    #endif
    """
    const char* ALORWS_PICOWS_VERSION


#: The picows version this module was compiled against ("" if the build did not say).
PICOWS_VERSION = (<bytes>ALORWS_PICOWS_VERSION).decode()

cdef bytes DATA_HEAD = b'{"data":{'


@cython.final  # no Python subclass: picows' vtable call runs on_ws_frame with no override check
@cython.auto_pickle(False)
cdef class BatchReader(WSListener):
    """The picows listener of a ``BatchListener`` (``listener``), with its hot path in C.

    The whole messages of the hot path are collected here and handed to
    ``listener.on_frames`` at the end of each read; every other frame first hands over what
    is collected and then goes to ``listener._other_frame``, and the connect, the disconnect
    and ``detach`` go to the listener, so it behaves as the listener does on its own.
    """

    cdef readonly object listener
    cdef list _read
    cdef bint _joining  # listener.parts is not None: a fragmented message is being joined

    def __cinit__(self, listener):
        self.listener = listener
        self._read = []
        self._joining = listener.parts is not None

    cpdef on_ws_connected(self, WSTransport transport):
        self.listener.on_ws_connected(transport)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        # As BatchListener.on_ws_frame: a final frame outside a fragmented message, over 125
        # bytes (a control frame has at most 125, RFC 6455 §5.5), is a whole TEXT/BINARY message.
        cdef list read
        if frame.fin and not self._joining and frame.payload_size > 125:
            read = self._read
            read.append(frame.get_payload_as_bytes())
            if frame.last_in_buffer:
                self._read = []
                self.listener.on_frames(read)
            return
        self.flush()
        listener = self.listener
        listener._other_frame(transport, frame)
        self._joining = listener.parts is not None

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.flush()
        self.listener.on_ws_disconnected(transport)

    def flush(self):
        """Hand over the messages collected so far."""
        cdef list read = self._read
        if read:
            self._read = []
            self.listener.on_frames(read)

    def detach(self):
        """``listener.detach()``, dropping what is collected: nothing reaches the owner."""
        self._read = []
        self.listener.detach()


def dispatch(table, list frames, route):
    """``TailTable.dispatch(table, frames, route)`` in C; see there for the rule.

    ``frames`` are bytes (anything else goes to ``route``). Within a run nothing but this
    loop runs, so a frame whose tail equals the run's first tail (matched at the first tail
    length) has the run's sink without another lookup: the table cannot have changed.
    """
    cdef dict by_tail = table.by_tail
    cdef tuple tail_lens = table.tail_lens
    cdef Py_ssize_t nlens = len(tail_lens)
    cdef Py_ssize_t first_len = tail_lens[0] if nlens else 0
    cdef Py_ssize_t i = 0, k, n, size, start = 0
    cdef object payload, sink
    cdef object run_sink = None
    cdef object run_first = None  # keeps the bytes run_tail points into alive
    cdef const char* run_tail = NULL  # the run's tail, if it matched at first_len
    cdef const char* ptr
    while i < PyList_GET_SIZE(frames):
        payload = frames[i]
        sink = None
        if PyBytes_CheckExact(payload):
            ptr = PyBytes_AS_STRING(payload)
            size = PyBytes_GET_SIZE(payload)
            if size >= 9 and memcmp(ptr, <const char*>DATA_HEAD, 9) == 0:
                if (
                    run_tail != NULL
                    and size >= first_len
                    and memcmp(ptr + size - first_len, run_tail, first_len) == 0
                ):
                    i += 1
                    continue  # the run's tail again: the run's sink
                for k in range(nlens):
                    n = tail_lens[k]
                    if n > size:
                        continue  # a key of n bytes cannot match a shorter frame
                    sink = by_tail.get(PyBytes_FromStringAndSize(ptr + size - n, n))
                    if sink is not None:
                        if sink is not run_sink:
                            if run_sink is not None:
                                run_sink.push_many(frames[start:i])
                            run_sink = sink
                            start = i
                            if k == 0:
                                run_first = payload
                                run_tail = ptr + size - n
                            else:
                                run_first = None
                                run_tail = NULL
                        break
        if sink is None:
            if run_sink is not None:
                run_sink.push_many(frames[start:i])
                run_sink = None
                run_first = None
                run_tail = NULL
            route(payload)
            # route() may have changed the table: a guid of a new length, say.
            by_tail = table.by_tail
            tail_lens = table.tail_lens
            nlens = len(tail_lens)
            first_len = tail_lens[0] if nlens else 0
        i += 1
    if run_sink is not None:
        run_sink.push_many(frames[start:i])


def _test_frame(WSMsgType msg_type, bytes payload, bint fin=True, bint last_in_buffer=False):
    """A picows ``WSFrame`` holding ``payload`` (tests: picows' own maker cannot set
    ``last_in_buffer``)."""
    cdef WSFrame frame = _make_test_ws_frame(msg_type, payload, fin, False)
    frame.last_in_buffer = last_in_buffer
    return frame
