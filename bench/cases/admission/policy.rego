package admission

# Validates a Deployment in an AdmissionReview: images from approved registries only, pinned
# tags, resource limits, no host networking, and an owner label. The result is the set of
# violations; an empty set admits the object.

approved := {"registry.internal/", "mirror.internal/"}

spec := input.request.object.spec.template.spec

containers := array.concat(object.get(spec, "initContainers", []), spec.containers)

violations contains msg if {
	some c in containers
	not any_prefix(c.image)
	msg := sprintf("container %s: image %s is not from an approved registry", [c.name, c.image])
}

violations contains msg if {
	some c in containers
	not contains(c.image, "@sha256:")
	tag := image_tag(c.image)
	tag in {"", "latest"}
	msg := sprintf("container %s: image tag must be pinned", [c.name])
}

violations contains msg if {
	some c in spec.containers
	not c.resources.limits.cpu
	msg := sprintf("container %s: no cpu limit", [c.name])
}

violations contains msg if {
	some c in spec.containers
	not c.resources.limits.memory
	msg := sprintf("container %s: no memory limit", [c.name])
}

violations contains "host networking is not allowed" if spec.hostNetwork == true

violations contains "missing label app.kubernetes.io/owner" if {
	not input.request.object.metadata.labels["app.kubernetes.io/owner"]
}

any_prefix(image) if {
	some p in approved
	startswith(image, p)
}

image_tag(image) := tag if {
	name := regex.replace(image, "^[^/]*/", "")
	parts := split(name, ":")
	count(parts) > 1
	tag := parts[count(parts) - 1]
} else := ""
