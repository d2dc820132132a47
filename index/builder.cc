#include "index/builder.hh"
