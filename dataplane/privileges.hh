/* -Z USER: dropping root once the capture is set up, as tcpdump does.
 *
 * Hugepage mapping, PCI/VFIO access, AF_PACKET/AF_XDP sockets and the control
 * socket need root and are all set up before the drop; afterwards capd only
 * writes files, which USER must be able to create in the output directory.
 * Files capd creates as root before the drop are given to USER on their
 * descriptors when they are created (FileSetOptions::owner_uid); nothing is
 * ever chowned by name. Control thread, before capture starts. */
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.hh"

namespace linecap::dataplane {

struct RunAs {
    uid_t uid;
    gid_t gid;  // the user's primary group
};

/* Before anything is created: checks in a child process that `user` exists
 * and could create files in the directory of `output_path` (timed: -G, whose
 * strftime directories capd makes: in the part of it named literally).
 * Returns the user's ids, which the files created before the drop are given
 * to. */
Result<RunAs> check_run_as(const std::string& user, const std::string& output_path, bool timed);

/* Checks that `user` exists and can write in that directory, then sets the
 * group list, gid and uid of the whole process (every thread). */
Status drop_privileges(const std::string& user, const std::string& output_path, bool timed);

}  // namespace linecap::dataplane
