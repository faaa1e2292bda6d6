import ArgumentParser
import Foundation
import TSExportCLI

// The executable is a shell: everything lives in TSExportCLI. Usage errors exit 1, as the contract says
// (ArgumentParser's own convention would be 64).
do {
    var command = try TSExportCommand.parseAsRoot()
    try command.run()
} catch {
    let code = TSExportCommand.exitCode(for: error)
    if code == .validationFailure {
        FileHandle.standardError.write(Data((TSExportCommand.fullMessage(for: error) + "\n").utf8))
        exit(1)
    }
    TSExportCommand.exit(withError: error)
}
