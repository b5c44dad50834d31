// overseer-health tells what Argo CD and kstatus (Flux, cli-utils) make of Overseer's objects.
//
// The Argo CD side runs the health checks shipped in manifests/argocd/argocd-cm.yaml in
// gopher-lua the way Argo CD runs a check from argocd-cm: only the base, package and table
// libraries, a one-second deadline, the object as the global `obj`, and a status outside
// Argo CD's set turned into Unknown. The kstatus side is cli-utils' status.Compute itself.
//
//	overseer-health check CONFIGMAP [FILE...]  objects (YAML or JSON, lists too; stdin without FILE) -> JSON
//	overseer-health test CONFIGMAP DIR         every DIR/<group>/<Kind>/health_test.yaml case
//	overseer-health netpol                     {networkPolicies, namespaces, pods, flows} on stdin -> JSON
//	                                           verdicts of cyclonus's NetworkPolicy engine (netpol.go)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

const healthKeyPrefix = "resource.customizations.health."

// Argo CD's health status codes; a script returning anything else is reported as Unknown.
var validHealth = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true}

type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type Verdict struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	ArgoCD  *Health `json:"argocd"`
	KStatus Health  `json:"kstatus"`
}

// scripts reads argocd-cm: the key resource.customizations.health.<group>_<Kind> -> Lua.
func scripts(configMap string) (map[string]string, error) {
	data, err := os.ReadFile(configMap)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Kind     string                `json:"kind"`
		Metadata struct{ Name string } `json:"metadata"`
		Data     map[string]string     `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", configMap, err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != "argocd-cm" {
		return nil, fmt.Errorf("%s: expected the ConfigMap argocd-cm, found %s %s", configMap, cm.Kind, cm.Metadata.Name)
	}
	out := map[string]string{}
	for k, v := range cm.Data {
		if key, ok := strings.CutPrefix(k, healthKeyPrefix); ok {
			out[key] = v
		}
	}
	return out, nil
}

func scriptKey(obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	return gvk.Group + "_" + gvk.Kind
}

// decode turns a JSON value into Lua as Argo CD's util/lua does.
func decode(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(decode(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), decode(l, item))
		}
		return t
	}
	return lua.LNil
}

func runHealth(script string, obj *unstructured.Unstructured) (*Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	h := &Health{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}
	if !validHealth[h.Status] {
		return &Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

func judge(checks map[string]string, obj *unstructured.Unstructured) (Verdict, error) {
	v := Verdict{Kind: obj.GetKind(), Name: obj.GetName()}
	if script, ok := checks[scriptKey(obj)]; ok {
		h, err := runHealth(script, obj)
		if err != nil {
			return v, fmt.Errorf("%s %s: health.lua: %w", v.Kind, v.Name, err)
		}
		v.ArgoCD = h
	}
	res, err := status.Compute(obj)
	if err != nil {
		return v, fmt.Errorf("%s %s: kstatus: %w", v.Kind, v.Name, err)
	}
	v.KStatus = Health{Status: res.Status.String(), Message: res.Message}
	return v, nil
}

// objects reads YAML or JSON documents; a List contributes its items. Numbers become int64 as
// they do for objects read from the API server (kstatus insists on it).
func objects(r io.Reader) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for {
		var doc json.RawMessage
		if err := dec.Decode(&doc); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(doc) == "null" {
			continue
		}
		obj, _, err := unstructured.UnstructuredJSONScheme.Decode(doc, nil, nil)
		if err != nil {
			return nil, err
		}
		switch o := obj.(type) {
		case *unstructured.UnstructuredList:
			for i := range o.Items {
				out = append(out, &o.Items[i])
			}
		case *unstructured.Unstructured:
			out = append(out, o)
		}
	}
}

func check(configMap string, files []string) error {
	checks, err := scripts(configMap)
	if err != nil {
		return err
	}
	var input bytes.Buffer
	if len(files) == 0 {
		if _, err := io.Copy(&input, os.Stdin); err != nil {
			return err
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		input.Write(data)
		input.WriteString("\n---\n")
	}
	objs, err := objects(&input)
	if err != nil {
		return err
	}
	verdicts := []Verdict{}
	for _, obj := range objs {
		v, err := judge(checks, obj)
		if err != nil {
			return err
		}
		verdicts = append(verdicts, v)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(verdicts)
}

// testCases runs health_test.yaml files in Argo CD's layout: tests[].inputPath, tests[].healthStatus.
func testCases(configMap, dir string) error {
	checks, err := scripts(configMap)
	if err != nil {
		return err
	}
	tested := map[string]bool{}
	failures, cases := 0, 0
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "health_test.yaml" {
			return err
		}
		kindDir := filepath.Dir(path)
		key := filepath.Base(filepath.Dir(kindDir)) + "_" + filepath.Base(kindDir)
		script, ok := checks[key]
		if !ok {
			return fmt.Errorf("%s: argocd-cm has no key %s%s", path, healthKeyPrefix, key)
		}
		if lua, err := os.ReadFile(filepath.Join(kindDir, "health.lua")); err != nil || string(lua) != script {
			return fmt.Errorf("%s: differs from argocd-cm key %s%s; copy it into %s", filepath.Join(kindDir, "health.lua"),
				healthKeyPrefix, key, configMap)
		}
		tested[key] = true
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var suite struct {
			Tests []struct {
				InputPath    string `json:"inputPath"`
				HealthStatus Health `json:"healthStatus"`
			} `json:"tests"`
		}
		if err := yaml.UnmarshalStrict(data, &suite); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, tc := range suite.Tests {
			cases++
			f, err := os.Open(filepath.Join(kindDir, tc.InputPath))
			if err != nil {
				return err
			}
			objs, err := objects(f)
			f.Close()
			if err != nil || len(objs) != 1 {
				return fmt.Errorf("%s: want one object (%v)", tc.InputPath, err)
			}
			if scriptKey(objs[0]) != key {
				return fmt.Errorf("%s: a %s under %s", tc.InputPath, scriptKey(objs[0]), kindDir)
			}
			got, err := runHealth(script, objs[0])
			if err != nil {
				return fmt.Errorf("%s: %w", tc.InputPath, err)
			}
			if *got != tc.HealthStatus {
				failures++
				fmt.Printf("FAIL %s/%s: want %+v, got %+v\n", key, tc.InputPath, tc.HealthStatus, *got)
			} else {
				fmt.Printf("ok   %s/%s: %s\n", key, tc.InputPath, got.Status)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var untested []string
	for key := range checks {
		if !tested[key] {
			untested = append(untested, key)
		}
	}
	sort.Strings(untested)
	if len(untested) > 0 {
		return fmt.Errorf("no health_test.yaml for %s under %s", strings.Join(untested, ", "), dir)
	}
	if failures > 0 {
		return fmt.Errorf("%d of %d cases failed", failures, cases)
	}
	fmt.Printf("%d cases passed\n", cases)
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) >= 3 && os.Args[1] == "check":
		err = check(os.Args[2], os.Args[3:])
	case len(os.Args) == 4 && os.Args[1] == "test":
		err = testCases(os.Args[2], os.Args[3])
	case len(os.Args) == 2 && os.Args[1] == "netpol":
		err = netpol(os.Stdin)
	default:
		err = fmt.Errorf("usage: overseer-health check ARGOCD-CM [FILE...] | overseer-health test ARGOCD-CM DIR | overseer-health netpol < INPUT.json")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "overseer-health:", err)
		os.Exit(1)
	}
}
