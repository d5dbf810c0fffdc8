# Role-based access control: a user may perform an action on an object when one of the user's
# roles grants it; admins may do anything.
package rbac

default allow := false

allow if "admin" in data.rbac.user_roles[input.user]

allow if {
	some grant in user_grants
	grant.action == input.action
	grant.object == input.object
}

user_grants contains grant if {
	some role in data.rbac.user_roles[input.user]
	some grant in data.rbac.role_grants[role]
}
