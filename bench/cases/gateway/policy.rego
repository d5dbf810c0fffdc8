package gateway

# Authorises HTTP calls behind an API gateway from the method, the path and the caller's
# token claims (already verified upstream): readers may GET their tenant's resources, writers
# may change them, and auditors may read the audit trail of any tenant.

default allow := false

segments := split(trim(input.path, "/"), "/")

scopes := {s | some s in split(input.claims.scope, " ")}

tenant := segments[1] if segments[0] == "tenants"

read_methods := {"GET", "HEAD"}

allow if {
	not blocked
	upper(input.method) in read_methods
	tenant == input.claims.tenant
	"read" in scopes
}

allow if {
	not blocked
	not upper(input.method) in read_methods
	tenant == input.claims.tenant
	"write" in scopes
	count(segments) > 2
}

allow if {
	not blocked
	["tenants", _, "audit"] = array.slice(segments, 0, 3)
	"audit" in scopes
	endswith(lower(input.claims.email), "@example.org")
}

blocked if input.claims.sub in data.suspended
