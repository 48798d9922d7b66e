// Golden Go: example service, standard library only.
//
// The deployment's contract with any app: listen on PORT, answer /healthz with 200, read
// APP_ENV, LOG_LEVEL, DATABASE_URL and REDIS_URL from the environment, and expose Prometheus
// metrics on /metrics (http_requests_total and http_request_duration_seconds).
//
// This example has no database or cache endpoint: Go database drivers are modules, and the
// template's test lab cannot fetch modules. Add your driver (pgx, go-sql-driver/mysql, go-redis)
// and read DATABASE_URL / REDIS_URL as the Python and Node examples do.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const healthPath = "/healthz"

// Latency buckets of http_request_duration_seconds (seconds).
var buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

type metrics struct {
	mu       sync.Mutex
	requests map[string]int64 // "method|route|status" -> count
	counts   map[string][]int64
	sums     map[string]float64
}

func newMetrics() *metrics {
	return &metrics{requests: map[string]int64{}, counts: map[string][]int64{}, sums: map[string]float64{}}
}

func (m *metrics) observe(method, route string, status int, seconds float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[fmt.Sprintf("%s|%s|%d", method, route, status)]++
	if m.counts[route] == nil {
		m.counts[route] = make([]int64, len(buckets)+1)
	}
	for i, le := range buckets {
		if seconds <= le {
			m.counts[route][i]++
		}
	}
	m.counts[route][len(buckets)]++
	m.sums[route] += seconds
}

func (m *metrics) write(w http.ResponseWriter) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# HELP http_requests_total HTTP requests served")
	fmt.Fprintln(w, "# TYPE http_requests_total counter")
	keys := make([]string, 0, len(m.requests))
	for key := range m.requests {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		p := strings.SplitN(key, "|", 3)
		fmt.Fprintf(w, "http_requests_total{method=%q,route=%q,status=%q} %d\n", p[0], p[1], p[2], m.requests[key])
	}
	fmt.Fprintln(w, "# HELP http_request_duration_seconds Time to serve a request")
	fmt.Fprintln(w, "# TYPE http_request_duration_seconds histogram")
	for route, counts := range m.counts {
		for i, le := range buckets {
			fmt.Fprintf(w, "http_request_duration_seconds_bucket{route=%q,le=\"%g\"} %d\n", route, le, counts[i])
		}
		fmt.Fprintf(w, "http_request_duration_seconds_bucket{route=%q,le=\"+Inf\"} %d\n", route, counts[len(buckets)])
		fmt.Fprintf(w, "http_request_duration_seconds_sum{route=%q} %g\n", route, m.sums[route])
		fmt.Fprintf(w, "http_request_duration_seconds_count{route=%q} %d\n", route, counts[len(buckets)])
	}
}

type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		log.Println("migrate: the example has no database schema; nothing to do")
		return
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	appEnv, version := os.Getenv("APP_ENV"), os.Getenv("APP_VERSION")
	m := newMetrics()

	routes := map[string]func(http.ResponseWriter, *http.Request){
		healthPath: func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) },
		"/": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]string{"service": "golden-go", "version": version, "environment": appEnv})
		},
		// Deliberate failure, for checking error alerts end to end.
		"/error": func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 500, map[string]string{"error": "deliberate error"}) },
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			m.write(w)
			return
		}
		started := time.Now()
		rec := &recorder{ResponseWriter: w, status: 200}
		route := "other"
		if handle, ok := routes[r.URL.Path]; ok {
			route = strings.Trim(r.URL.Path, "/")
			handle(rec, r)
		} else {
			writeJSON(rec, 404, map[string]string{"error": "not found"})
		}
		m.observe(r.Method, route, rec.status, time.Since(started).Seconds())
	})

	server := &http.Server{Addr: ":" + port, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		log.Printf("listening on %s (%s, version %s)", port, appEnv, version)
		if err := server.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	// On SIGTERM: stop accepting, let requests in flight finish, then exit.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	log.Println("draining")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = server.Shutdown(ctx)
}
