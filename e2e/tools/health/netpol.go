package main

// The netpol subcommand: which flows the NetworkPolicies of a cluster allow, answered by
// cyclonus's policy engine (pkg/matcher, the evaluator sig-network's conformance work used),
// not by Overseer's own code. It sends no packet: it reads objects and evaluates.

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattfenwick/cyclonus/pkg/matcher"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Endpoint is one end of a flow: a pod ("namespace/name", at the address the API server gives
// it) or an address outside the cluster; pod wins when both are set.
type Endpoint struct {
	Pod string `json:"pod,omitempty"`
	IP  string `json:"ip,omitempty"`
}

type Flow struct {
	Name     string   `json:"name"`
	From     Endpoint `json:"from"`
	To       Endpoint `json:"to"`
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"` // TCP (default), UDP or SCTP
}

type NetpolInput struct {
	NetworkPolicies struct {
		Items []*networkingv1.NetworkPolicy `json:"items"`
	} `json:"networkPolicies"`
	Namespaces struct {
		Items []corev1.Namespace `json:"items"`
	} `json:"namespaces"`
	Pods struct {
		Items []corev1.Pod `json:"items"`
	} `json:"pods"`
	Flows []Flow `json:"flows"`
}

type FlowVerdict struct {
	Name    string `json:"name"`
	Allowed bool   `json:"allowed"`
	Egress  bool   `json:"egress"`  // the source's policies let it out
	Ingress bool   `json:"ingress"` // the destination's policies let it in
	Port    string `json:"portName,omitempty"`
}

type cluster struct {
	namespaces map[string]map[string]string // name -> labels
	pods       map[string]*corev1.Pod       // namespace/name -> pod
}

func (c *cluster) peer(e Endpoint) (*matcher.TrafficPeer, *corev1.Pod, error) {
	if e.Pod == "" {
		if e.IP == "" {
			return nil, nil, fmt.Errorf("an endpoint needs pod or ip")
		}
		return &matcher.TrafficPeer{IP: e.IP}, nil, nil
	}
	pod, ok := c.pods[e.Pod]
	if !ok {
		return nil, nil, fmt.Errorf("pod %s is not in the input", e.Pod)
	}
	nsLabels, ok := c.namespaces[pod.Namespace]
	if !ok {
		return nil, nil, fmt.Errorf("namespace %s of pod %s is not in the input", pod.Namespace, e.Pod)
	}
	ip := pod.Status.PodIP
	if ip == "" {
		return nil, nil, fmt.Errorf("pod %s has no status.podIP yet (ipBlocks are matched against it)", e.Pod)
	}
	return &matcher.TrafficPeer{IP: ip, Internal: &matcher.InternalPeer{
		PodLabels: pod.Labels, NamespaceLabels: nsLabels, Namespace: pod.Namespace}}, pod, nil
}

// portName is the name a destination pod gives the port, for policies that name ports.
func portName(pod *corev1.Pod, port int, protocol corev1.Protocol) string {
	if pod == nil {
		return ""
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if int(p.ContainerPort) == port && proto == protocol {
				return p.Name
			}
		}
	}
	return ""
}

func netpol(r io.Reader) error {
	var in NetpolInput
	// Unknown fields are let through: a newer API server's objects carry fields this k8s.io/api lacks.
	if err := json.NewDecoder(r).Decode(&in); err != nil {
		return fmt.Errorf("netpol input: %w", err)
	}
	c := &cluster{namespaces: map[string]map[string]string{}, pods: map[string]*corev1.Pod{}}
	for _, ns := range in.Namespaces.Items {
		c.namespaces[ns.Name] = ns.Labels
	}
	for i := range in.Pods.Items {
		p := &in.Pods.Items[i]
		c.pods[p.Namespace+"/"+p.Name] = p
	}
	if len(in.Flows) == 0 {
		return fmt.Errorf("netpol input: no flows to answer")
	}
	policy := matcher.BuildNetworkPolicies(true, in.NetworkPolicies.Items)
	verdicts := []FlowVerdict{}
	for _, f := range in.Flows {
		src, _, err := c.peer(f.From)
		if err != nil {
			return fmt.Errorf("flow %q: from: %w", f.Name, err)
		}
		dst, dstPod, err := c.peer(f.To)
		if err != nil {
			return fmt.Errorf("flow %q: to: %w", f.Name, err)
		}
		proto := corev1.Protocol(strings.ToUpper(f.Protocol))
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if f.Port < 1 || f.Port > 65535 {
			return fmt.Errorf("flow %q: port %d is not 1-65535", f.Name, f.Port)
		}
		name := portName(dstPod, f.Port, proto)
		result := policy.IsTrafficAllowed(&matcher.Traffic{Source: src, Destination: dst,
			ResolvedPort: f.Port, ResolvedPortName: name, Protocol: proto})
		verdicts = append(verdicts, FlowVerdict{Name: f.Name, Allowed: result.IsAllowed(),
			Egress: result.Egress.IsAllowed(), Ingress: result.Ingress.IsAllowed(), Port: name})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(verdicts)
}
