package k8stest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// VolumeLabel marks the PersistentVolumes the harness creates, so that it deletes exactly those.
const VolumeLabel = "shopmesh.io/k8stest"

// VolumePath is the node folder that backs claim c under base.
func VolumePath(base string, c Claim) string {
	return filepath.Join(base, c.Namespace, c.PVC)
}

// PersistentVolumes returns a List of hostPath PersistentVolumes, one pre-bound (claimRef) to each claim:
// what a cluster without a default StorageClass and provisioner (the single-node test cluster) needs for
// the StatefulSets' volumeClaimTemplates. Reclaim policy Retain: the harness deletes them and their
// folders itself.
func PersistentVolumes(base string, claims []Claim) ([]byte, error) {
	items := make([]any, 0, len(claims))
	for _, c := range claims {
		items = append(items, map[string]any{
			"apiVersion": "v1", "kind": "PersistentVolume",
			"metadata": map[string]any{
				"name":   VolumeName(c),
				"labels": map[string]string{VolumeLabel: "true"},
			},
			"spec": map[string]any{
				"capacity":                      map[string]string{"storage": c.Storage},
				"accessModes":                   []string{"ReadWriteOnce"},
				"persistentVolumeReclaimPolicy": "Retain",
				"storageClassName":              "",
				"volumeMode":                    "Filesystem",
				"claimRef":                      map[string]string{"namespace": c.Namespace, "name": c.PVC},
				"hostPath":                      map[string]string{"path": VolumePath(base, c), "type": "Directory"},
			},
		})
	}
	return json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

// VolumeName is the PersistentVolume's name for claim c.
func VolumeName(c Claim) string {
	return strings.ToLower(fmt.Sprintf("%s-%s", c.Namespace, c.PVC))
}

// MakeVolumeDirs creates each claim's folder (emptied first) owned by the user and group its pod runs
// as: a hostPath volume is not chowned to the pod's fsGroup.
func MakeVolumeDirs(base string, claims []Claim) error {
	for _, c := range claims {
		dir := VolumePath(base, c)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.Chown(dir, int(c.UID), int(c.GID)); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
	}
	return nil
}
