#include "index/index_file.hh"
