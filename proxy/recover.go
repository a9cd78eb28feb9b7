package proxy

import (
	"errors"
	"net/http"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sloproxy/sloproxy/internal/clip"
)

// Recoverer turns a handler's panic into a JSON 500 for its client, an
// error-level log line with the stack, and a count in
// sloproxy_panics_total, so that one bad request neither reaches the HTTP
// server's own recovery (which drops the connection without an answer and
// logs through the standard logger) nor goes unnoticed. It guards every
// listener: create one per process and wrap each listener's handler.
type Recoverer struct {
	log    *zap.Logger
	panics *prometheus.CounterVec
}

// NewRecoverer registers sloproxy_panics_total with reg and logs to log;
// a nil log means no logs.
func NewRecoverer(reg prometheus.Registerer, log *zap.Logger) *Recoverer {
	if log == nil {
		log = zap.NewNop()
	}
	panics := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sloproxy_panics_total",
		Help: "Panics recovered in request handlers, by listener (query or admin); each was answered with a 500 and logged with its stack.",
	}, []string{"listener"})
	reg.MustRegister(panics)
	return &Recoverer{log: log, panics: panics}
}

// Wrap returns next guarded, its panics counted under listener.
func (rc *Recoverer) Wrap(listener string, next http.Handler) http.Handler {
	counter := rc.panics.WithLabelValues(listener)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // the sentinel is compared, as net/http does
				panic(v) // the handler's deliberate abort: net/http ends the connection quietly
			}
			counter.Inc()
			rc.log.Error("panic in a request handler; answered 500", zap.String("listener", listener),
				zap.String("method", r.Method), zap.String("path", clip.String(r.URL.Path)),
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			if tw.wrote {
				// The status line is out: the client sees a cut answer,
				// which the dropped connection makes plain.
				panic(http.ErrAbortHandler)
			}
			writeError(w, errPanic)
		}()
		next.ServeHTTP(tw, r)
	})
}

// errPanic is the error a panicking request is answered with; the details
// are in the log, not in the answer.
var errPanic = errors.New("internal error: the proxy failed on this request; the failure is logged")

// trackingWriter notes whether the status line was written, so that a
// panic after it is not answered twice.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(status int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes a flush through, for handlers that stream.
func (w *trackingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.wrote = true
		f.Flush()
	}
}
