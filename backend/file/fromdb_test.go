package file_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/botstate/botstate"
	"github.com/botstate/botstate/backend/file"
	"github.com/botstate/botstate/driver"
)

// TestStoreFromTheApplicationsDB: a store on a bbolt database the
// application already has open keeps its buckets beside the application's,
// and closing the store leaves the database open and usable.
func TestStoreFromTheApplicationsDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("app"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("the app's"))
	}); err != nil {
		t.Fatal(err)
	}
	drv, err := file.FromDB(db, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := botstate.OpenDriver(drv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Events().Claim(ctx, "e1", []byte("p"), time.Minute)
	if err != nil || c.Status != botstate.Claimed {
		t.Fatalf("claim: %v %v", c.Status, err)
	}
	if err := st.Events().Complete(ctx, c.Token, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Events().Claim(ctx, "e2", nil, time.Minute); !errors.Is(err, botstate.ErrClosed) {
		t.Errorf("a call after Close: %v", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("app")).Get([]byte("k")); string(v) != "the app's" {
			t.Errorf("the application's bucket holds %q", v)
		}
		return tx.Bucket([]byte("app")).Put([]byte("k2"), []byte("after"))
	}); err != nil {
		t.Fatalf("the database after the store closed: %v", err)
	}
	// botstate's state is in the same file: a store opened on it again sees
	// the completed event.
	drv2, err := file.FromDB(db, driver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := botstate.OpenDriver(drv2)
	defer st2.Close()
	if c, err := st2.Events().Claim(ctx, "e1", nil, time.Minute); err != nil || c.Status != botstate.Completed {
		t.Errorf("the event after reopening: %v %v", c.Status, err)
	}
}

func TestFromDBRefusals(t *testing.T) {
	if _, err := file.FromDB(nil, driver.Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("nil db: %v", err)
	}
	path := filepath.Join(t.TempDir(), "ro.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := file.FromDB(ro, driver.Config{}); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("read-only db: %v", err)
	}
	if _, err := botstate.OpenDriver(nil); !errors.Is(err, botstate.ErrInvalidArgument) {
		t.Errorf("OpenDriver(nil): %v", err)
	}
}
