#!/usr/bin/env bash
# Create a few users in one namespace and print an access token for the first, using only the user-service CLI.
#
#   examples/create_users.sh NAMESPACE
#
# Settings come from the environment (DATABASE_URL, JWT_SECRET_KEY, ...) or from a .env in the current folder,
# as for every user-service command. Standard output carries only data: one "username<TAB>password" line per new
# user, then the access token on the last line; progress goes to standard error. The first failing step stops the
# script with its exit code (a second run stops at the first user, who already exists).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 NAMESPACE" >&2
  exit 2
fi
namespace=$1

user-service migrate >&2

first=""
# username|email|full name
while IFS='|' read -r username email full_name; do
  # 18 random bytes are 24 base64 characters; the password reaches the CLI on stdin, never in argv.
  password=$(head -c 18 /dev/urandom | base64)
  id=$(printf '%s\n' "$password" |
    user-service create-user "$namespace" "$username" --password-stdin --email "$email" --full-name "$full_name")
  echo "created $namespace/$username ($id)" >&2
  printf '%s\t%s\n' "$username" "$password"
  first=${first:-$username}
done <<'USERS'
alice|alice@example.com|Alice Liddell
bob|bob@example.com|Bob Cratchit
carol|carol@example.com|Carol Danvers
USERS

echo "access token for $namespace/$first:" >&2
user-service issue-token "$namespace" "$first"
