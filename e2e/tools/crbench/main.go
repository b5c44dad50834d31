// overseer-crbench: the dispatch benchmark's Go contender, a controller written with
// controller-runtime that makes exactly the writes of e2e/bench/baseline_controller.py from its
// cache: for each new Goal (no status.phase), the Goal's pod and one status patch (phase Running,
// agent, pod, attempt, startedAt, observedGeneration). No dependencies, retries, events or pod watch.
//
//	overseer-crbench --namespace NS --templates FILE [--workers 16] [--kubeconfig FILE] [--stats FILE]
//
// Rendering a pod is Overseer's own code (Python), so the benchmark renders one pod per Agent with
// a placeholder goal name and uid (--templates: {"agent": pod, ...}) and this controller puts the
// Goal's name and uid in their place. It prints "ready" once its Goal informer has synced, and on
// SIGTERM writes its writes (by verb and resource) to --stats as JSON, as the baseline does.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The placeholders the benchmark renders its templates with (e2e/bench/dispatch.py).
const (
	goalPlaceholder = "crbench-goal-placeholder"
	uidPlaceholder  = "crbench-uid-placeholder"
	fieldManager    = "bench-controller-runtime"
)

var goalGVK = schema.GroupVersionKind{Group: "overseer.dev", Version: "v1alpha1", Kind: "Goal"}

type dispatcher struct {
	client    client.Client
	templates map[string][]byte // agent name -> pod JSON with the placeholders

	mu     sync.Mutex
	writes map[string]int
	errors int
}

func (d *dispatcher) count(what string) {
	d.mu.Lock()
	d.writes[what]++
	d.mu.Unlock()
}

func phase(obj *unstructured.Unstructured) string {
	p, _, _ := unstructured.NestedString(obj.Object, "status", "phase")
	return p
}

func (d *dispatcher) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	goal := &unstructured.Unstructured{}
	goal.SetGroupVersionKind(goalGVK)
	if err := d.client.Get(ctx, req.NamespacedName, goal); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if phase(goal) != "" {
		return reconcile.Result{}, nil
	}
	agent, _, _ := unstructured.NestedString(goal.Object, "spec", "agentRef", "name")
	template, ok := d.templates[agent]
	if !ok {
		return reconcile.Result{}, nil // selectors and unknown Agents are beyond the floor
	}
	raw := bytes.ReplaceAll(template, []byte(goalPlaceholder), []byte(goal.GetName()))
	raw = bytes.ReplaceAll(raw, []byte(uidPlaceholder), []byte(goal.GetUID()))
	pod := &unstructured.Unstructured{}
	if err := pod.UnmarshalJSON(raw); err != nil {
		return reconcile.Result{}, reconcile.TerminalError(err)
	}
	if err := d.client.Create(ctx, pod, client.FieldOwner(fieldManager)); err != nil && !apierrors.IsAlreadyExists(err) {
		d.fail(req, err)
		return reconcile.Result{}, err
	}
	d.count("POST pods")
	status, _ := json.Marshal(map[string]any{"status": map[string]any{
		"phase": "Running", "agent": agent, "pod": pod.GetName(), "attempt": 1,
		"startedAt":          time.Now().UTC().Format(time.RFC3339),
		"observedGeneration": goal.GetGeneration(),
	}})
	if err := d.client.Status().Patch(ctx, goal, client.RawPatch(types.MergePatchType, status),
		client.FieldOwner(fieldManager)); err != nil {
		d.fail(req, err)
		return reconcile.Result{}, err
	}
	d.count("PATCH goals/status")
	return reconcile.Result{}, nil
}

func (d *dispatcher) fail(req reconcile.Request, err error) {
	d.mu.Lock()
	d.errors++
	d.mu.Unlock()
	fmt.Fprintf(os.Stderr, "dispatch %s: %v\n", req.Name, err)
}

func main() {
	// A flag set of its own: controller-runtime registers --kubeconfig on the global one.
	flags := flag.NewFlagSet("overseer-crbench", flag.ExitOnError)
	namespace := flags.String("namespace", "", "the namespace whose Goals to dispatch (required)")
	templatesPath := flags.String("templates", "", "JSON file: Agent name -> pod rendered with the placeholders (required)")
	workers := flags.Int("workers", 16, "concurrent reconciles")
	kubeconfig := flags.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	statsPath := flags.String("stats", "", "write the writes made (JSON) here on exit")
	_ = flags.Parse(os.Args[1:])
	if *namespace == "" || *templatesPath == "" {
		fmt.Fprintln(os.Stderr, "--namespace and --templates are required")
		os.Exit(2)
	}
	if err := run(*namespace, *templatesPath, *workers, *kubeconfig, *statsPath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(namespace, templatesPath string, workers int, kubeconfig, statsPath string) error {
	log.SetLogger(zap.New(zap.UseDevMode(false)))
	var templates map[string]json.RawMessage
	data, err := os.ReadFile(templatesPath)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, &templates); err != nil {
		return fmt.Errorf("--templates %s: %w", templatesPath, err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// The baseline's client is not rate-limited; client-go's default (5 QPS) would make this a
	// benchmark of the limiter.
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	cfg.UserAgent = "bench-controller-runtime"

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{namespace: {}}},
		Client:                 client.Options{Cache: &client.CacheOptions{Unstructured: true}}, // reads from the cache
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return err
	}
	d := &dispatcher{client: mgr.GetClient(), templates: map[string][]byte{}, writes: map[string]int{}}
	for agent, pod := range templates {
		d.templates[agent] = pod
	}
	goal := &unstructured.Unstructured{}
	goal.SetGroupVersionKind(goalGVK)
	// As the baseline's offer(): only Goals without a phase reach the queue.
	undispatched := predicate.NewPredicateFuncs(func(o client.Object) bool {
		u, ok := o.(*unstructured.Unstructured)
		return ok && phase(u) == ""
	})
	if err := ctrl.NewControllerManagedBy(mgr).Named("goals").
		For(goal, builder.WithPredicates(undispatched)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(d); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		if statsPath != "" {
			d.mu.Lock()
			out, _ := json.Marshal(map[string]any{"writes": d.writes, "errors": d.errors})
			d.mu.Unlock()
			_ = os.WriteFile(statsPath, out, 0o644)
		}
		cancel()
		os.Exit(0)
	}()
	informer, err := mgr.GetCache().GetInformer(ctx, goal)
	if err != nil {
		return err
	}
	go func() {
		for !informer.HasSynced() {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("ready")
	}()
	return mgr.Start(ctx)
}
