// The guest images sandboxes boot: built by deploy/guest/build-image.sh from
// Debian packages, cached by the hash of their inputs, one folder each.
#pragma once

#include <string>

namespace sandgate::cli {

// $SANDGATE_IMAGES (a cache several homes share), else $SANDGATE_HOME/images.
std::string images_dir();

// The image for this sandgate, built first if its inputs changed; its folder,
// or "" when the build failed (the script has said why on stderr).
std::string find_or_build_image();

}  // namespace sandgate::cli
