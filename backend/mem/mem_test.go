package mem_test

import (
	"testing"

	_ "github.com/botstate/botstate/backend/mem"
	"github.com/botstate/botstate/statetest"
)

func TestConformance(t *testing.T) {
	statetest.Run(t, statetest.URLOpener("mem://"))
}
