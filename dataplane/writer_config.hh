/* The writer configuration capd's options ask for: one WriterConfig per
 * writer, the same for each but for its index (which spreads the file
 * names, storage/file_set.hh). What options cannot say, the interface
 * descriptions and their counters, the pipeline adds once the sources are
 * open. Pure; control thread. */
#pragma once

#include <memory>
#include "dataplane/options.hh"

#include "storage/catalog_publisher.hh"
#include "storage/writer.hh"

namespace linecap::dataplane {

/* The application name written in each file's header. */
inline constexpr const char* kApplication = "linecap capd 0.1.0";

storage::WriterConfig writer_config(const Options& o, unsigned writer_index);

/* With --catalog: the publisher its options ask for (host defaults to the
 * hostname, the spool to .capd-catalog.spool in -w's directory), its spool
 * opened; not started. Errors name the option or the spool file. */
Result<std::unique_ptr<storage::CatalogPublisher>> make_catalog_publisher(const Options& o);

}  // namespace linecap::dataplane
