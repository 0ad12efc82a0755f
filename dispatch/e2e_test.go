package dispatch

import "os"

func workerRole() string { return os.Getenv("BOTSTATE_DISPATCH_WORKER") }

func runWorkerProcess(role string) {}
