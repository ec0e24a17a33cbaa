package k8stest

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Overlay is what the harness reads from a rendered kustomize overlay: the objects it waits for, the
// images it loads into the node, the volume claims it backs with volumes.
type Overlay struct {
	Namespace    string
	Deployments  []appsv1.Deployment
	StatefulSets []appsv1.StatefulSet
	Jobs         []batchv1.Job
	HPAs         []autoscalingv2.HorizontalPodAutoscaler
	PDBs         []policyv1.PodDisruptionBudget
}

// Render runs `kustomize build dir` (the kustomize library kubectl embeds) and decodes the workloads,
// HPAs and PDBs; other kinds are skipped.
func Render(dir string) (*Overlay, error) {
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	o := &Overlay{}
	for _, r := range res.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		gvk := r.GetGvk()
		var target any
		switch gvk.ApiVersion() + "/" + gvk.Kind {
		case "v1/Namespace":
			o.Namespace = r.GetName()
			continue
		case "apps/v1/Deployment":
			o.Deployments = append(o.Deployments, appsv1.Deployment{})
			target = &o.Deployments[len(o.Deployments)-1]
		case "apps/v1/StatefulSet":
			o.StatefulSets = append(o.StatefulSets, appsv1.StatefulSet{})
			target = &o.StatefulSets[len(o.StatefulSets)-1]
		case "batch/v1/Job":
			o.Jobs = append(o.Jobs, batchv1.Job{})
			target = &o.Jobs[len(o.Jobs)-1]
		case "autoscaling/v2/HorizontalPodAutoscaler":
			o.HPAs = append(o.HPAs, autoscalingv2.HorizontalPodAutoscaler{})
			target = &o.HPAs[len(o.HPAs)-1]
		case "policy/v1/PodDisruptionBudget":
			o.PDBs = append(o.PDBs, policyv1.PodDisruptionBudget{})
			target = &o.PDBs[len(o.PDBs)-1]
		default:
			continue
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(data, target); err != nil {
			return nil, fmt.Errorf("%s %s: %w", gvk.Kind, r.GetName(), err)
		}
	}
	if o.Namespace == "" {
		return nil, errors.New(dir + ": the overlay renders no Namespace")
	}
	return o, nil
}

// Images are the images of every container and init container, sorted, each once.
func (o *Overlay) Images() []string {
	var pods []corev1.PodSpec
	for _, d := range o.Deployments {
		pods = append(pods, d.Spec.Template.Spec)
	}
	for _, s := range o.StatefulSets {
		pods = append(pods, s.Spec.Template.Spec)
	}
	for _, j := range o.Jobs {
		pods = append(pods, j.Spec.Template.Spec)
	}
	var out []string
	for _, p := range pods {
		for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
			if !slices.Contains(out, c.Image) {
				out = append(out, c.Image)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Claim is one PersistentVolumeClaim a StatefulSet's volumeClaimTemplates create, with the owner its
// pod runs as (a hostPath volume is not chowned to fsGroup: the folder must belong to the pod's user).
type Claim struct {
	Namespace   string
	StatefulSet string
	// PVC is the claim's name: <template>-<statefulset>-<ordinal>.
	PVC      string
	Storage  string // the request, e.g. "2Gi"
	UID, GID int64
}

// Claims lists the claims of every StatefulSet replica.
func (o *Overlay) Claims() []Claim {
	var out []Claim
	for _, s := range o.StatefulSets {
		replicas := int32(1)
		if s.Spec.Replicas != nil {
			replicas = *s.Spec.Replicas
		}
		var uid, gid int64
		if sc := s.Spec.Template.Spec.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				uid = *sc.RunAsUser
			}
			gid = uid
			if sc.RunAsGroup != nil {
				gid = *sc.RunAsGroup
			}
			if sc.FSGroup != nil {
				gid = *sc.FSGroup
			}
		}
		for _, t := range s.Spec.VolumeClaimTemplates {
			q := t.Spec.Resources.Requests[corev1.ResourceStorage]
			for i := range replicas {
				out = append(out, Claim{
					Namespace: o.Namespace, StatefulSet: s.Name,
					PVC:     fmt.Sprintf("%s-%s-%d", t.Name, s.Name, i),
					Storage: q.String(), UID: uid, GID: gid,
				})
			}
		}
	}
	return out
}

// Workload names a Deployment or StatefulSet with its replica count.
type Workload struct {
	Kind, Name string
	Replicas   int32
}

// Workloads lists the Deployments and StatefulSets with their declared replicas.
func (o *Overlay) Workloads() []Workload {
	var out []Workload
	for _, d := range o.Deployments {
		out = append(out, Workload{Kind: "Deployment", Name: d.Name, Replicas: replicasOf(d.Spec.Replicas)})
	}
	for _, s := range o.StatefulSets {
		out = append(out, Workload{Kind: "StatefulSet", Name: s.Name, Replicas: replicasOf(s.Spec.Replicas)})
	}
	return out
}

func replicasOf(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
