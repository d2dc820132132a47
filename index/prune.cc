#include "index/prune.hh"
