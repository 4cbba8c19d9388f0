package process

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/isorun/isorun/agent/internal/channel"
)

// resolveUser turns the exec "user" field into credentials, reading the guest's own
// /etc/passwd and /etc/group (no cgo, no NSS: the image's files are the only source).
//
// Forms: "root" (nil: run as the agent, root), "name", "uid", and "user:group" where each side
// is a name or a number. Without a group the user's passwd gid is used, or 0 for a uid with no
// passwd entry (as Docker does). Supplementary groups come from /etc/group for users that have
// a passwd entry, so a name gets the same groups it would get from login.
func resolveUser(user, etcDir string) (*syscall.Credential, error) {
	if user == "" || user == "root" {
		return nil, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return nil, channel.BadRequest("user", "malformed user %q", user)
	}
	passwd := readColonFile(filepath.Join(etcDir, "passwd"), 4)
	groups := readColonFile(filepath.Join(etcDir, "group"), 3)

	var entry []string
	for _, e := range passwd {
		if e[0] == userPart || e[2] == userPart {
			entry = e
			break
		}
	}
	var uid, gid uint32
	if entry != nil {
		u, err1 := parseID(entry[2])
		g, err2 := parseID(entry[3])
		if err1 != nil || err2 != nil {
			return nil, channel.BadRequest("user", "passwd entry of %q is malformed", userPart)
		}
		uid, gid = u, g
	} else {
		u, err := parseID(userPart)
		if err != nil {
			return nil, channel.BadRequest("user", "unknown user %q", userPart)
		}
		uid = u
	}
	if hasGroup {
		g, ok := lookupGroup(groupPart, groups)
		if !ok {
			return nil, channel.BadRequest("user", "unknown group %q", groupPart)
		}
		gid = g
	}
	cred := &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	if entry != nil {
		for _, g := range groups {
			if len(g) < 4 {
				continue
			}
			for _, member := range strings.Split(g[3], ",") {
				if member == entry[0] {
					if id, err := parseID(g[2]); err == nil && id != gid {
						cred.Groups = append(cred.Groups, id)
					}
				}
			}
		}
	}
	return cred, nil
}

func lookupGroup(name string, groups [][]string) (uint32, bool) {
	for _, g := range groups {
		if g[0] == name {
			id, err := parseID(g[2])
			return id, err == nil
		}
	}
	id, err := parseID(name)
	return id, err == nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// readColonFile parses an /etc/passwd-style file, skipping comments and lines with fewer than
// minFields fields. A missing file reads as empty: minimal images often have none.
func readColonFile(path string, minFields int) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) >= minFields {
			out = append(out, fields)
		}
	}
	return out
}
