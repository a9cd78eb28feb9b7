package state_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sloproxy/sloproxy/state"
)

func Example() {
	ctx := context.Background()
	// One process: the in-memory backend. For several proxies, pass
	// state.NewRedis(client, state.RedisOptions{}) instead.
	store := state.NewStore(nil, state.Options{})
	if err := store.Start(ctx); err != nil {
		panic(err)
	}
	defer store.Close()

	_ = store.PutApp(ctx, state.App{Name: "digits", InputType: state.InputFloat32, SLO: 20 * time.Millisecond, DefaultOutput: "-1"})
	for _, v := range []string{"1", "2"} {
		_ = store.PutVersion(ctx, state.ModelVersion{
			Model: "mnist", Version: v, InputType: state.InputFloat32, Replicas: 1,
			Runtime: state.RuntimeSpec{Kind: state.RuntimeProcess, Command: []string{"./mnist", "--version", v}},
		})
	}
	_ = store.Link(ctx, "digits", "mnist")
	_ = store.SetCurrent(ctx, "mnist", "2")
	_ = store.SetReplicas(ctx, "mnist", "2", []string{"127.0.0.1:7001"})
	err := store.DeleteVersion(ctx, "mnist", "2")
	fmt.Println(err)

	// The query path: one snapshot per query.
	snap := store.Snapshot()
	app, _ := snap.App("digits")
	for _, model := range snap.ModelsOf(app.Name) {
		v, _ := snap.Current(model)
		fmt.Println(app.Name, app.SLO, "->", model, v.Version, snap.Replicas(model, v.Version))
	}
	// Output:
	// conflict: model "mnist" version "2": is the current version and the model is linked to apps digits; set another current version or unlink first
	// digits 20ms -> mnist 2 [127.0.0.1:7001]
}
