// glassbox: the command-line client of a Glassbox server. See `glassbox --help` and
// client/cpp/README.md.
#include "client/cpp/cli.h"

int main(int argc, char** argv) { return glassbox::cli::Main(argc, argv); }
