// Verify Akece webhooks with the Standard Webhooks Go library, and deduplicate on webhook-id.
// Usage: WEBHOOK_SECRET=whsec_... go run .
// Env: WEBHOOK_SECRET (required, as shown once by the API), HOST (127.0.0.1), PORT (8000; 0 picks a free one).
//
// Verify the raw body before parsing it: Verify checks the v1 HMAC of "<id>.<timestamp>.<body>" against
// every signature in webhook-signature (two during a secret rotation) and refuses a timestamp more than
// 5 minutes off. A refused request gets 401 (the sender retries, then dead-letters it). webhook-id is the
// same on every retry and replay: remember it (in your database, for a few days) and do the work once.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func env(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok {
		return value
	}
	return fallback
}

func answer(w http.ResponseWriter, status int, payload map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(payload)
}

func main() {
	wh, err := standardwebhooks.NewWebhook(os.Getenv("WEBHOOK_SECRET"))
	if err != nil {
		log.Fatalf("WEBHOOK_SECRET: %v", err)
	}
	var mu sync.Mutex
	seen := map[string]bool{} // in production: a unique key in your database

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body) // the raw bytes
		if err != nil {
			answer(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if err := wh.Verify(body, r.Header); err != nil {
			answer(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
			return
		}
		id := r.Header.Get("webhook-id")
		mu.Lock()
		duplicate := seen[id]
		seen[id] = true
		mu.Unlock()
		if duplicate {
			answer(w, http.StatusOK, map[string]string{"status": "duplicate"})
			return
		}
		var event struct {
			Event string          `json:"event"`
			ID    json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(body, &event)
		fmt.Printf("processed %s %s\n", event.Event, event.ID)
		answer(w, http.StatusOK, map[string]string{"status": "processed"})
	})

	listener, err := net.Listen("tcp", net.JoinHostPort(env("HOST", "127.0.0.1"), env("PORT", "8000")))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, nil))
}
