package sink

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/connlogd/connlogd/event"
)

// leaves returns the dotted paths of m's leaves under prefix, with their
// values.
func leaves(m map[string]any, prefix string, out map[string]any) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			leaves(sub, p, out)
			continue
		}
		out[p] = v
	}
}

func readGzipJSON(t *testing.T, name string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "shared", "schemas", name))
	if err != nil {
		t.Fatalf("the official schema files are beside the repository (../shared/schemas): %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(zr).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestContainerFields(t *testing.T) {
	ev := attrPod()
	c := ev.Container
	native := decode(t, encodeSchema(t, schemaNative, ev)[0])
	native.expect(fields{
		"container_id": c.ID, "container_name": c.Name, "container_image": c.Image, "container_image_id": c.ImageID,
		"pod_name": c.PodName, "pod_namespace": c.PodNamespace, "pod_uid": c.PodUID,
	})
	ecs := decode(t, encodeSchema(t, schemaECS, ev)[0])
	ecs.expect(fields{
		"container.id": c.ID, "container.name": c.Name,
		"container.image.name": "registry.local:5000/shop/api",
		"orchestrator.type":    "kubernetes", "orchestrator.namespace": "shop",
		"orchestrator.resource.type": "pod", "orchestrator.resource.name": "api-7d4b9", "orchestrator.resource.id": c.PodUID,
	})
	// ecs_flat normalizes container.image.tag to an array.
	if got := ecs.strs("container.image.tag"); len(got) != 1 || got[0] != "1.4" {
		t.Errorf("container.image.tag %v, want [1.4]", got)
	}
	if got := ecs.strs("container.image.hash.all"); len(got) != 1 || got[0] != c.ImageID {
		t.Errorf("container.image.hash.all %v", got)
	}
	if got := ecs.strs("container.image.tag"); len(got) != 1 || got[0] != "1.4" {
		t.Errorf("container.image.tag %v", got)
	}
	ocsf := decode(t, encodeSchema(t, schemaOCSF, ev)[0])
	ocsf.expect(fields{
		"src_endpoint.container.uid": c.ID, "src_endpoint.container.name": c.Name,
		"src_endpoint.container.image.uid": c.ImageID, "src_endpoint.container.image.name": "registry.local:5000/shop/api",
		"src_endpoint.container.image.tag": "1.4", "src_endpoint.container.pod_uuid": c.PodUID,
		"src_endpoint.container.orchestrator": "Kubernetes",
	})

	// Without the runtime's answer: the id only, from the namespace.
	bare := attrPod()
	bare.Container = &event.Container{ID: c.ID}
	decode(t, encodeSchema(t, schemaNative, bare)[0]).absent("container_name", "container_image", "pod_name")
	decode(t, encodeSchema(t, schemaECS, bare)[0]).absent("container.name", "container.image", "orchestrator")
	decode(t, encodeSchema(t, schemaOCSF, bare)[0]).absent("src_endpoint.container.image", "src_endpoint.container.pod_uuid")
}

// What a CRI runtime (containerd, CRI-O) reports goes the same way: a
// container's name from the pod's spec and the runtime's image
// reference; a pod sandbox's process has the pod fields only.
func TestContainerFieldsFromCRI(t *testing.T) {
	ev := attrPod()
	ev.Container = &event.Container{ID: attrCtr2, Name: "api", Image: "docker.io/library/nginx:1.27",
		ImageID: "sha256:3f2d1b6e7c905f1c0e2a8d0b4c7e9a513f2d1b6e7c905f1c0e2a8d0b4c7e9a51",
		PodName: "api-7d4b9", PodNamespace: "shop", PodUID: "5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90"}
	c := ev.Container
	decode(t, encodeSchema(t, schemaECS, ev)[0]).expect(fields{
		"container.name": "api", "container.image.name": "docker.io/library/nginx",
		"orchestrator.namespace": "shop", "orchestrator.resource.name": "api-7d4b9", "orchestrator.resource.id": c.PodUID,
	})
	decode(t, encodeSchema(t, schemaOCSF, ev)[0]).expect(fields{
		"src_endpoint.container.name": "api", "src_endpoint.container.image.uid": c.ImageID,
		"src_endpoint.container.image.name": "docker.io/library/nginx", "src_endpoint.container.image.tag": "1.27",
		"src_endpoint.container.pod_uuid": c.PodUID,
	})

	sandbox := attrPod()
	sandbox.Container = &event.Container{ID: attrCtr2, PodName: "api-7d4b9", PodNamespace: "shop", PodUID: c.PodUID}
	n := decode(t, encodeSchema(t, schemaNative, sandbox)[0])
	n.expect(fields{"container_id": attrCtr2, "pod_name": "api-7d4b9", "pod_namespace": "shop", "pod_uid": c.PodUID})
	n.absent("container_name", "container_image", "container_image_id")
	e := decode(t, encodeSchema(t, schemaECS, sandbox)[0])
	e.expect(fields{"container.id": attrCtr2, "orchestrator.resource.name": "api-7d4b9", "orchestrator.namespace": "shop"})
	e.absent("container.name", "container.image")
	o := decode(t, encodeSchema(t, schemaOCSF, sandbox)[0])
	o.expect(fields{"src_endpoint.container.uid": attrCtr2, "src_endpoint.container.pod_uuid": c.PodUID,
		"src_endpoint.container.orchestrator": "Kubernetes"})
	o.absent("src_endpoint.container.name", "src_endpoint.container.image")
}

// TestContainerFieldsInOfficialSchemas: every container and orchestrator
// field written exists in ECS 8.11.0 as a keyword, and in OCSF 1.3.0's
// container and image objects as a string (uuid_t for pod_uuid).
func TestContainerFieldsInOfficialSchemas(t *testing.T) {
	var ecsFlat map[string]struct {
		Type string `json:"type"`
	}
	readGzipJSON(t, "ecs_flat-8.11.0.json.gz", &ecsFlat)
	ev := attrPod()
	d := decode(t, encodeSchema(t, schemaECS, ev)[0])
	got := map[string]any{}
	leaves(d.m, "", got)
	var checked []string
	for p := range got {
		if p != "container.id" && !hasPrefix(p, "container.") && !hasPrefix(p, "orchestrator.") {
			continue
		}
		f, ok := ecsFlat[p]
		if !ok || f.Type != "keyword" {
			t.Errorf("ECS field %s: type %q in ecs_flat-8.11.0 (want keyword)", p, f.Type)
		}
		checked = append(checked, p)
	}
	sort.Strings(checked)
	if len(checked) < 9 {
		t.Errorf("checked only %v", checked)
	}

	var ocsfDoc struct {
		Objects map[string]struct {
			Attributes map[string]struct {
				Type       string `json:"type"`
				ObjectType string `json:"object_type"`
			} `json:"attributes"`
		} `json:"objects"`
	}
	readGzipJSON(t, "ocsf-1.3.0-compiled.json.gz", &ocsfDoc)
	o := decode(t, encodeSchema(t, schemaOCSF, ev)[0])
	ctr, _ := o.get("src_endpoint.container")
	cm, _ := ctr.(map[string]any)
	if len(cm) < 5 {
		t.Fatalf("src_endpoint.container: %v", ctr)
	}
	attrs := ocsfDoc.Objects["container"].Attributes
	for k := range cm {
		a, ok := attrs[k]
		want := "string_t"
		switch k {
		case "image":
			want = "object_t"
		case "pod_uuid":
			want = "uuid_t"
		}
		if !ok || a.Type != want {
			t.Errorf("OCSF container.%s: type %q in OCSF 1.3.0, want %s", k, a.Type, want)
		}
	}
	if attrs["image"].ObjectType != "image" {
		t.Errorf("OCSF container.image is a %q", attrs["image"].ObjectType)
	}
	img, _ := cm["image"].(map[string]any)
	for k := range img {
		if a, ok := ocsfDoc.Objects["image"].Attributes[k]; !ok || a.Type != "string_t" {
			t.Errorf("OCSF image.%s: type %q", k, a.Type)
		}
	}
	if _, ok := img["uid"]; !ok {
		t.Error("OCSF image without its required uid")
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func TestSplitImageRef(t *testing.T) {
	for _, tt := range []struct{ ref, name, tag, digest string }{
		{"nginx", "nginx", "", ""},
		{"nginx:1.27", "nginx", "1.27", ""},
		{"registry.local:5000/shop/web", "registry.local:5000/shop/web", "", ""},
		{"registry.local:5000/shop/web:1.4", "registry.local:5000/shop/web", "1.4", ""},
		{"web@sha256:abc", "web", "", "sha256:abc"},
		{"web:1@sha256:abc", "web", "1", "sha256:abc"},
		{"", "", "", ""},
	} {
		n, tg, dg := splitImageRef(tt.ref)
		if n != tt.name || tg != tt.tag || dg != tt.digest {
			t.Errorf("%q: %q %q %q", tt.ref, n, tg, dg)
		}
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c90": true, "5F1C0E2A-8D0B-4C7E-9A51-3F2D1B6E7C90": true,
		"5f1c0e2a8d0b4c7e9a513f2d1b6e7c90": false, "5f1c0e2a-8d0b-4c7e-9a51-3f2d1b6e7c9g": false, "": false,
	} {
		if isUUID(s) != want {
			t.Errorf("%q: %v", s, !want)
		}
	}
}
