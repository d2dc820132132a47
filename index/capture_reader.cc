#include "index/capture_reader.hh"
