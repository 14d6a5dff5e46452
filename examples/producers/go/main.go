// Publish one Akece event with franz-go (CloudEvents 1.0, Kafka protocol binding, binary mode).
// Usage: go run . [EVENT_FILE]
// Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func uuid4() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		log.Fatal(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func main() {
	file := "../message_created.json"
	if len(os.Args) > 1 {
		file = os.Args[1]
	}
	body, err := os.ReadFile(file) // sent byte for byte: receivers get exactly this
	if err != nil {
		log.Fatal(err)
	}
	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), ",")...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	eventID := uuid4()
	accountID := "1"       // must equal the body's account.id, or the event is quarantined
	conversation := "1234" // the body's conversation.display_id
	record := &kgo.Record{
		Topic: env("AKECE_EVENTS_TOPIC", "akece.events"),
		Key:   []byte(accountID + ":" + conversation),
		Value: body,
		Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")},
			{Key: "ce_id", Value: []byte(eventID)},
			{Key: "ce_source", Value: []byte("akece://examples/go")},
			{Key: "ce_type", Value: []byte("message_created")},
			{Key: "ce_time", Value: []byte(time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))},
			{Key: "ce_accountid", Value: []byte(accountID)},
			{Key: "content-type", Value: []byte("application/json")},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	produced, err := client.ProduceSync(ctx, record).First()
	if err != nil {
		log.Fatalf("publish failed: %v", err)
	}
	fmt.Printf("published %s partition=%d offset=%d\n", eventID, produced.Partition, produced.Offset)
}
